"""The public grid-search functions (``kerasq.params``) and kerasq's own layers, called with bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input.matrix import Case, check, params

import kerasq
from kerasq.core import QuantizationErrorMethod as E
from kerasq.core import QuantizationMethod as M
from kerasq.errors import ConfigError, DataError
from kerasq.layers import ShiftedActivation
from kerasq.params import search_activation_params, search_weight_params

W = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype("float32")
COUNTS = np.ones(64)


def _weights(w=W, **kwargs):
    args = {"n_bits": 8, "method": M.SYMMETRIC, "error_method": E.MSE, "channel_axis": -1, **kwargs}
    return lambda: search_weight_params(w, **args)


def _activations(counts=COUNTS, **kwargs):
    args = {"hist_range": 4.0, "observed_min": -1.0, "observed_max": 3.0, "n_bits": 8, "method": M.UNIFORM,
            "error_method": E.MSE, **kwargs}  # fmt: skip
    return lambda: search_activation_params(counts, **args)


PARAMS = [
    Case("search_weight_params(n_bits=1)", _weights(n_bits=1), ("n_bits",)),
    Case("search_weight_params(n_bits='8')", _weights(n_bits="8"), ("n_bits",)),
    Case("search_weight_params(l_p_value='2')", _weights(l_p_value="2"), ("l_p_value",)),
    Case("search_weight_params(l_p_value=0)", _weights(l_p_value=0), ("l_p_value",)),
    Case("search_weight_params(error_method='mse')", _weights(error_method="mse"), ("error_method",)),
    Case("search_weight_params(method='symmetric')", _weights(method="symmetric"), ("method",)),
    Case("search_weight_params(channel_axis=4)", _weights(channel_axis=4), ("channel_axis 4", "rank 4")),
    Case("search_weight_params(channel_axis='-1')", _weights(channel_axis="-1"), ("channel_axis",)),
    Case("search_weight_params(channel_axis=(3, -1))", _weights(channel_axis=(3, -1)), ("repeats",)),
    Case("search_weight_params(HMSE, no importance)", _weights(error_method=E.HMSE), ("importance",)),
    Case("search_weight_params(w=empty)", _weights(np.zeros((0, 4)), channel_axis=None), ("empty",)),
    Case("search_weight_params(w=NaN)", _weights(np.full((2, 2), np.nan), channel_axis=None), ("NaN",)),
    Case("search_activation_params(counts odd)", _activations(np.ones(63)), ("counts", "even")),
    Case("search_activation_params(counts<0)", _activations(-COUNTS), ("counts",)),
    Case("search_activation_params(hist_range=0)", _activations(hist_range=0), ("hist_range",)),
    Case("search_activation_params(hist_range='4')", _activations(hist_range="4"), ("hist_range",)),
    Case(
        "search_activation_params(observed_min>max)",
        _activations(observed_min=3.0, observed_max=-1.0),
        ("observed",),
    ),
    Case("search_activation_params(HMSE)", _activations(error_method=E.HMSE), ("HMSE",)),
]

LAYERS = [
    Case("ShiftedActivation(activation='swissh')", lambda: ShiftedActivation("swissh", 0.5), ("activation",)),
    Case("ShiftedActivation(activation=3)", lambda: ShiftedActivation(3, 0.5), ("activation",)),
    Case(
        "ShiftedActivation(activation={bad layer})",
        lambda: ShiftedActivation({"class_name": "Nope"}, 0.5),
        ("activation",),
    ),
    Case("ShiftedActivation(shift=NaN)", lambda: ShiftedActivation("swish", float("nan")), ("shift",)),
    Case("ShiftedActivation(shift='1')", lambda: ShiftedActivation("swish", "1"), ("shift",)),
    Case("ShiftedActivation(padding=5)", lambda: ShiftedActivation("swish", 0.5, padding=5), ("padding",)),
    Case(
        "ActivationQuantizer(rounding='up')", lambda: kerasq.ActivationQuantizer(rounding="up"), ("rounding",)
    ),
    Case(
        "ShiftedActivation(padding=[(-1, 0)])",
        lambda: ShiftedActivation("swish", 0.5, padding=[(-1, 0)]),
        ("padding",),
    ),
]


@pytest.mark.parametrize("case", params(PARAMS))
def test_bad_search_argument(case):
    assert isinstance(check(case), (ConfigError, DataError))


@pytest.mark.parametrize("case", params(LAYERS))
def test_bad_layer_argument(case):
    assert isinstance(check(case), ConfigError)
