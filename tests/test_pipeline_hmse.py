"""HMSE in the pipeline: ``kernel_importance`` scores the weights on high-variance inputs far above the others,
and PTQ's HMSE kernel grids follow those scores (so they differ from MSE's)."""

from __future__ import annotations

import keras
import numpy as np

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig, QuantizationErrorMethod
from kerasq.pipeline import kernel_importance, plan_model

LOUD, QUIET = 8, 8  # inputs with std 10 (first) and std 0.1 (last)


def _two_scale_dense() -> keras.Model:
    """x (16) -> Dense "mix" (4, ReLU) -> Dense "head" (2). The kernel of "mix" is small (std 0.05) on the loud inputs
    and has one +-1 outlier per column on the quiet ones: the outliers set an MSE grid, yet barely reach the
    output."""
    x = inputs = keras.Input((LOUD + QUIET,), name="x")
    mix = keras.layers.Dense(4, activation="relu", use_bias=False, name="mix")  # no linear collapse
    head = keras.layers.Dense(2, use_bias=False, name="head")
    model = keras.Model(inputs, head(mix(x)))
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.05, (LOUD + QUIET, 4))
    kernel[LOUD + np.arange(4), np.arange(4)] = [1.0, -1.0, 1.0, -1.0]
    mix.set_weights([kernel.astype("float32")])
    head.set_weights([rng.normal(0, 0.5, (4, 2)).astype("float32")])
    return model


def _data(n: int = 64) -> np.ndarray:
    std = np.array([10.0] * LOUD + [0.1] * QUIET)
    return (np.random.default_rng(1).normal(size=(n, LOUD + QUIET)) * std).astype("float32")


def test_weights_on_high_variance_inputs_score_higher():
    """The score of W[i, j] is about E[x_i^2 | unit j active] times a factor of column j: ~1e4 times higher on
    the loud inputs."""
    model, x = _two_scale_dense(), _data()
    graph, plan = plan_model(model, x, None, None)
    scores = kernel_importance(graph, plan, [x[:32]])
    mix = scores[("mix", "kernel")]
    assert mix.shape == (LOUD + QUIET, 4)
    assert np.all(mix > 0)
    ratio = mix[:LOUD].min(axis=0) / mix[LOUD:].max(axis=0)  # per column
    assert np.all(ratio > 1e3), ratio
    assert mix.max() / mix.min() > 1e3


def test_hmse_kernel_grid_serves_the_weights_that_matter():
    """At 4 bits MSE keeps the outliers (threshold ~1); HMSE, which weighs errors by those scores, shrinks the
    grid to the small weights on the loud inputs, and the model's output is closer to float."""
    model, x = _two_scale_dense(), _data()
    grids, errors = {}, {}
    for method in (QuantizationErrorMethod.MSE, QuantizationErrorMethod.HMSE):
        qc = QuantizationConfig(weights_error_method=method, weights_n_bits=4, weights_bias_correction=False)
        q, info = kerasq.ptq.keras_post_training_quantization(model, x, core_config=CoreConfig(qc))
        grids[method] = np.asarray(info.layers["mix"].weights["kernel"].threshold)
        f = model.predict(x, verbose=0)
        errors[method] = float(np.sum((q.predict(x, verbose=0) - f) ** 2) / np.sum(f**2))
    mse, hmse = grids[QuantizationErrorMethod.MSE], grids[QuantizationErrorMethod.HMSE]
    assert mse.shape == hmse.shape == (4,)
    assert np.all(mse >= 0.5), mse
    assert np.all(hmse < 0.5 * mse), (hmse, mse)
    assert errors[QuantizationErrorMethod.HMSE] < 0.5 * errors[QuantizationErrorMethod.MSE], errors
