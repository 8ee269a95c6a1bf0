"""The objective registry: every QuantizationErrorMethod has an entry, and the searches read only the entry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kerasq.config.enums import QuantizationErrorMethod as E
from kerasq.config.enums import QuantizationMethod as M
from kerasq.errors import ConfigError
from kerasq.params import error_methods
from kerasq.params.error_methods import ERROR_METHODS, error_method_spec
from kerasq.params.search import search_activation_params, search_weight_params


def test_every_error_method_is_registered():
    assert set(ERROR_METHODS) == set(E)


def test_an_unregistered_objective_is_a_config_error_naming_the_registered_ones():
    with pytest.raises(ConfigError, match=r"QuantizationErrorMethod\.MSE.*got 'mse'"):
        error_method_spec("mse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="error_method must be one of"):
        search_weight_params(np.ones((3, 4)), n_bits=8, method=M.SYMMETRIC, error_method="mse",  # type: ignore[arg-type]
                             channel_axis=None)  # fmt: skip


def test_the_search_scores_candidates_with_the_registered_function(monkeypatch):
    """Replacing MAE's entry by an objective that prefers the finest step changes both searches' choice: the
    searches call what the registry holds, nothing hard-wired."""
    calls = []

    def finest(values, scale, zero_point, qmin, qmax, l_p_value):
        calls.append(scale.shape)
        return scale.copy()  # the smallest step wins

    entry = dataclasses.replace(ERROR_METHODS[E.MAE], errors=finest)
    monkeypatch.setitem(error_methods.ERROR_METHODS, E.MAE, entry)
    w = np.random.default_rng(0).normal(size=(64, 8))
    plain = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=1)
    custom = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.MAE, channel_axis=1)
    assert calls and np.all(custom.scale < 0.2 * plain.scale)
    counts = np.histogram(np.abs(w), bins=64, range=(-4, 4))[0]
    act = search_activation_params(counts, 4.0, observed_min=0.0, observed_max=float(np.abs(w).max()), n_bits=8,
                                   method=M.SYMMETRIC, error_method=E.MAE)  # fmt: skip
    assert float(act.threshold) < 0.1 * float(np.abs(w).max())


def test_weights_only_objectives_are_refused_for_activations_naming_the_usable_ones():
    counts = np.ones(64)
    with pytest.raises(
        ConfigError, match="HMSE applies to weights only; choose NOCLIPPING, MSE, MAE, LP, KL"
    ):
        search_activation_params(counts, 1.0, observed_min=-1.0, observed_max=1.0, n_bits=8,
                                 method=M.SYMMETRIC, error_method=E.HMSE)  # fmt: skip


def test_objectives_needing_hessian_scores_refuse_to_run_without_them():
    with pytest.raises(ConfigError, match="HMSE needs per-weight Hessian scores"):
        search_weight_params(
            np.ones((3, 4)), n_bits=8, method=M.SYMMETRIC, error_method=E.HMSE, channel_axis=None
        )
