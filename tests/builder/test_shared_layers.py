"""A layer applied twice stays one layer with one quantized kernel; grids its calls disagree on are refused."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest

from kerasq.builder import build_model
from kerasq.errors import ModelError
from kerasq.pipeline import prepare

L = keras.layers
DATA = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")


def _shared() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((8,), name="x")
    dense = L.Dense(8, activation="relu", name="shared")
    return keras.Model(x, dense(dense(x)))


def _at_bits(plan, node: str, bits: int):
    weights = dict(plan.weights)
    weights[node] = {k: replace(s, n_bits=bits) for k, s in plan.weights[node].items()}
    return replace(plan, weights=weights)


def test_shared_layer_is_one_wrapper_on_the_first_calls_grid():
    prepared = prepare(_shared(), DATA, None, None)
    params = prepared.grids.params_for(prepared.plan)
    built = build_model(prepared.graph, prepared.plan, params)
    assert built.layers["shared"] is built.layers["shared_call1"]
    wrapper = built.layers["shared"]
    scale, _ = wrapper.kernel_grid("kernel")
    np.testing.assert_allclose(
        scale.reshape(-1), np.asarray(params.weights["shared"]["kernel"].scale).reshape(-1)
    )


def test_calls_with_different_kernel_bits_are_refused():
    """Before: the wrapper kept the first call's 8-bit range and took the second call's 2-bit scale."""
    prepared = prepare(_shared(), DATA, None, None)
    plan = _at_bits(prepared.plan, "shared_call1", 2)
    params = prepared.grids.params_for(plan)
    with pytest.raises(
        ModelError, match=r"'shared' is applied 2 times.*kernel 8 bits at 'shared'.*kernel 2 bits"
    ):
        build_model(prepared.graph, plan, params)
