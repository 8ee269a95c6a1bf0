"""Interest-point weights of the mixed-precision sensitivity under HESSIAN: ``trace_i * E[f_i^2]`` per point,
checked against its closed form on a model with one output (where the Hessian-trace estimate is exact)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasq.core import MixedPrecisionQuantizationConfig, MpDistanceWeighting
from kerasq.mixed_precision.sensitivity import compute_sensitivity
from kerasq.mixed_precision.units import configurable_units
from kerasq.pipeline import prepare

QUIET = 0.01  # the factor branch "b"'s output takes before the add


def _two_branches() -> keras.Model:
    """x (6) -> Dense "a" (8, ReLU) -> Dense "a_out" (1); the same through "b" / "b_out", whose kernel is scaled
    by ``QUIET``; the two added into one output. Each hidden point reaches the output through one linear
    layer, so its Jacobian is that layer's kernel for every sample."""
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((6,), name="x")
    ends = [
        keras.layers.Dense(1, name=f"{name}_out")(keras.layers.Dense(8, activation="relu", name=name)(x))
        for name in ("a", "b")
    ]
    model = keras.Model(inputs, keras.layers.Add(name="add")(ends))
    kernel, bias = model.get_layer("b_out").get_weights()
    model.get_layer("b_out").set_weights([kernel * QUIET, bias * QUIET])
    return model


def _expected_weights(model: keras.Model, labels: list[str], x: np.ndarray) -> np.ndarray:
    """``||d y / d f||^2 * mean(f^2)`` per interest point, normalized: the hidden points ("a_activation",
    the ReLU split off Dense "a", and "b_activation") have the next kernel as Jacobian; the output ("add") 1."""
    layers = [model.get_layer(label.removesuffix("_activation")) for label in labels]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    floats = [np.asarray(f, np.float64) for f in probe.predict(x, verbose=0)]
    traces = {f"{name}_activation": float(np.sum(model.get_layer(f"{name}_out").kernel.numpy() ** 2.0))
              for name in ("a", "b")}  # fmt: skip
    w = np.array([traces.get(label, 1.0) * np.mean(f**2) for label, f in zip(labels, floats, strict=True)])
    return w / w.sum()


@pytest.fixture(scope="module")
def two_branches():
    model = _two_branches()
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    prepared = prepare(model, x, None, None)
    units = configurable_units(prepared.graph, prepared.plan, weights=False)
    return model, x, prepared, units


def _weights(two_branches, **mp) -> tuple[list[str], np.ndarray]:
    _, x, prepared, units = two_branches
    config = MixedPrecisionQuantizationConfig(**mp)
    sens = compute_sensitivity(prepared.graph, prepared.plan, units, prepared.grids, [x], config)
    return sens.interest_points, np.asarray(sens.point_weights)


def test_hessian_point_weights_match_the_closed_form(two_branches):
    model, x = two_branches[:2]
    labels, hessian = _weights(two_branches, distance_weighting_method=MpDistanceWeighting.HESSIAN)
    assert labels == ["b_activation", "a_activation", "add"]
    np.testing.assert_allclose(hessian, _expected_weights(model, labels, x), rtol=1e-3)
    w = dict(zip(labels, hessian, strict=True))
    # the quiet branch's hidden point barely reaches the output
    assert w["b_activation"] < 10 * QUIET**2 * w["a_activation"]


def test_hessian_point_weights_are_not_avg(two_branches):
    labels, avg = _weights(two_branches, distance_weighting_method=MpDistanceWeighting.AVG)
    np.testing.assert_allclose(avg, 1 / len(labels))
    _, hessian = _weights(two_branches, distance_weighting_method=MpDistanceWeighting.HESSIAN)
    assert hessian.max() / hessian.min() > 1e3, hessian
    assert np.abs(hessian - avg).max() > 0.1, (hessian, avg)
    _, flag = _weights(two_branches, use_hessian_based_scores=True)  # the MCT flag means HESSIAN
    np.testing.assert_allclose(flag, hessian, rtol=1e-6)
