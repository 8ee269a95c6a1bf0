"""Hessian-trace scores against closed forms on linear models, shapes on a small CNN, convergence and errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasq.hessian import (
    HessianConfig,
    activation_hessian_sample_scores,
    activation_hessian_scores,
    weight_hessian_scores,
)

layers = keras.layers
# min_iterations forces many draws: the running-mean test alone may stop after ~50 draws (per-element error ~8%)
PRECISE = HessianConfig(max_iterations=400, min_iterations=300, tolerance=1e-4, seed=1)


def linear_model(n_out: int = 3, seed: int = 0):
    """x (6) -> Dense(5, W1) -> a -> Dense(n_out, W2) -> y; outputs [a, y] (use ``.y_model`` for y alone)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(6, 5)).astype("float32")
    w2 = rng.normal(size=(5, n_out)).astype("float32")
    x = keras.Input((6,))
    d1 = layers.Dense(5, use_bias=False, name="d1")
    d2 = layers.Dense(n_out, use_bias=False, name="d2")
    a = d1(x)
    y = d2(a)
    model = keras.Model(x, [a, y])
    model.y_model = keras.Model(x, y)  # same layers; for weight scores, whose target is every model output
    d1.set_weights([w1])
    d2.set_weights([w2])
    return model, d1, d2, w1.astype(np.float64), w2.astype(np.float64)


def data(n_batches: int = 2, batch: int = 32, dim: int = 6, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, dim)).astype("float32") for _ in range(n_batches)]


def test_activation_trace_matches_frobenius_norm():
    model, _, _, _, w2 = linear_model()
    stats: dict = {}
    (tensor,) = activation_hessian_scores(model, 1, data(), config=PRECISE, stats=stats)
    (channel,) = activation_hessian_scores(model, 1, data(), granularity="channel", config=PRECISE)
    (element,) = activation_hessian_scores(model, 1, data(), granularity="element", config=PRECISE)
    assert tensor.shape == () and channel.shape == (5,) and element.shape == (5,)
    np.testing.assert_allclose(tensor, np.sum(w2**2), rtol=0.1)
    np.testing.assert_allclose(channel, np.sum(w2**2, axis=1), rtol=0.1)
    np.testing.assert_allclose(element, channel, rtol=1e-6)
    assert stats["samples"] == 64 and len(stats["iterations"]) == 2


def test_activation_exact_when_output_is_scalar():
    # y has one element: v = +-1, so ||d(v y)/da||^2 = ||W2||^2 for every draw (zero variance).
    model, _, _, _, w2 = linear_model(n_out=1)
    cfg = HessianConfig(max_iterations=5, min_iterations=1)
    (channel,) = activation_hessian_scores(model, 1, data(), granularity="channel", config=cfg)
    (tensor,) = activation_hessian_scores(model, 1, data(), config=cfg)
    np.testing.assert_allclose(channel, w2[:, 0] ** 2, rtol=1e-5)
    np.testing.assert_allclose(tensor, np.sum(w2**2), rtol=1e-5)


def test_two_inputs_and_list_batches():
    # a = x1 + x2 -> Dense(1, W) -> y: the score of a is ||W||^2 exactly; batches are [x1, x2] lists.
    x1, x2 = keras.Input((4,)), keras.Input((4,))
    a = layers.Add()([x1, x2])
    dense = layers.Dense(1, use_bias=False)
    model = keras.Model([x1, x2], [a, dense(a)])
    w = np.arange(1, 5, dtype="float32").reshape(4, 1)
    dense.set_weights([w])
    batches = [[b, b * 2.0] for b in data(dim=4)]
    (tensor,) = activation_hessian_scores(model, 1, batches, config=HessianConfig(min_iterations=1))
    np.testing.assert_allclose(tensor, np.sum(w**2), rtol=1e-5)


def test_weight_scores_last_layer_exact_per_sample():
    # d(v.y)/dW2[i, j] = a_i v_j -> squared a_i^2 for any v: score = mean_x a_i^2 in every column.
    # Squaring the gradient of the batch sum instead would give (sum_b a_bi v_bj)^2 / B, far from this.
    model, _, d2, w1, _ = linear_model()
    batches = data()
    x = np.concatenate(batches).astype(np.float64)
    expected = np.repeat(np.mean((x @ w1) ** 2, axis=0)[:, None], 3, axis=1)
    cfg = HessianConfig(max_iterations=4, min_iterations=2)
    (element,) = weight_hessian_scores(model.y_model, [d2.kernel], batches, config=cfg)
    assert element.shape == (5, 3)
    np.testing.assert_allclose(element, expected, rtol=1e-5)
    (channel,) = weight_hessian_scores(model.y_model, [d2.kernel], batches, granularity="channel", config=cfg)
    np.testing.assert_allclose(channel, expected.sum(axis=0), rtol=1e-5)
    (rows,) = weight_hessian_scores(
        model.y_model, [d2.kernel], batches, granularity="channel", channel_axis=[0], config=cfg
    )
    np.testing.assert_allclose(rows, expected.sum(axis=1), rtol=1e-5)


def test_weight_scores_first_layer_closed_form():
    # d(v.y)/dW1[k, i] = x_k (W2 v)_i -> E = mean(x_k^2) * ||W2[i, :]||^2.
    model, d1, d2, _, w2 = linear_model()
    batches = data()
    x = np.concatenate(batches).astype(np.float64)
    expected = np.mean(x**2, axis=0)[:, None] * np.sum(w2**2, axis=1)[None, :]
    w1_score, w2_score = weight_hessian_scores(model.y_model, [d1.kernel, d2.kernel], batches, config=PRECISE)
    assert w1_score.shape == (6, 5) and w2_score.shape == (5, 3)
    np.testing.assert_allclose(w1_score, expected, rtol=0.1)
    (tensor,) = weight_hessian_scores(
        model.y_model, [d1.kernel], batches, granularity="tensor", config=PRECISE
    )
    np.testing.assert_allclose(tensor, expected.sum(), rtol=0.05)


def conv_model():
    keras.utils.set_random_seed(3)
    x = keras.Input((8, 8, 3))
    conv = layers.Conv2D(4, 3, padding="same", name="conv")
    c = conv(x)
    r = layers.ReLU()(c)
    dense = layers.Dense(3, name="fc")
    y = dense(layers.GlobalAveragePooling2D()(r))
    return keras.Model(x, [c, r, y]), keras.Model(x, y), conv, dense


def test_granularity_shapes_conv_model():
    model, y_model, conv, dense = conv_model()
    batches = [np.random.default_rng(i).normal(size=(8, 8, 8, 3)).astype("float32") for i in range(2)]
    cfg = HessianConfig(max_iterations=10, seed=5)
    results = {g: activation_hessian_scores(model, 2, batches, granularity=g, config=cfg) for g in
               ("tensor", "channel", "element")}  # fmt: skip
    for i in range(2):
        element, channel, tensor = results["element"][i], results["channel"][i], results["tensor"][i]
        assert element.shape == (8, 8, 4) and channel.shape == (4,) and tensor.shape == ()
        assert np.all(element >= 0) and tensor > 0
        np.testing.assert_allclose(tensor, element.sum(), rtol=1e-6)
        np.testing.assert_allclose(channel, element.sum(axis=(0, 1)), rtol=1e-6)
    # d y/d conv = d y/d relu * 1[conv > 0]: the conv output scores at most the ReLU output
    assert results["tensor"][0] <= results["tensor"][1] * (1 + 1e-6)

    variables = [conv.kernel, conv.bias, dense.kernel]
    wres = {g: weight_hessian_scores(y_model, variables, batches, granularity=g, config=cfg) for g in
            ("tensor", "channel", "element")}  # fmt: skip
    assert [e.shape for e in wres["element"]] == [(3, 3, 3, 4), (4,), (4, 3)]
    assert [c.shape for c in wres["channel"]] == [(4,), (4,), (3,)]
    for e, c, t in zip(wres["element"], wres["channel"], wres["tensor"], strict=True):
        assert t.shape == () and t > 0
        np.testing.assert_allclose(t, e.sum(), rtol=1e-6)
        np.testing.assert_allclose(c.sum(), t, rtol=1e-6)


def test_convergence_and_determinism():
    model, *_ = linear_model()
    loose, tight = {}, {}
    cfg_loose = HessianConfig(max_iterations=200, min_iterations=2, tolerance=0.5)
    cfg_tight = HessianConfig(max_iterations=200, min_iterations=2, tolerance=1e-7)
    first = activation_hessian_scores(model, 1, data(), config=cfg_loose, stats=loose)
    activation_hessian_scores(model, 1, data(), config=cfg_tight, stats=tight)
    assert max(loose["iterations"]) < min(tight["iterations"])
    assert tight["iterations"] == [200, 200] and loose["draws"] == sum(loose["iterations"])
    again = activation_hessian_scores(model, 1, data(), config=cfg_loose)
    other = activation_hessian_scores(model, 1, data(), config=HessianConfig(2, 2, 0.5, seed=7))
    assert again[0] == first[0]
    assert other[0] != first[0]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_iterations": 0}, "max_iterations"),
        ({"min_iterations": 0}, "min_iterations"),
        ({"min_iterations": 2.5}, "min_iterations"),
        ({"min_iterations": 10, "max_iterations": 5}, "min_iterations"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"tolerance": -1e-3}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
    ],
)
def test_bad_config(kwargs, field):
    with pytest.raises(ValueError, match=field):
        HessianConfig(**kwargs)


def test_bad_inputs():
    model, _, d2, _, _ = linear_model()
    with pytest.raises(ValueError, match="no batches"):
        activation_hessian_scores(model, 1, [])
    with pytest.raises(ValueError, match="no batches"):
        weight_hessian_scores(model, [d2.kernel], iter(()))
    bad = data()[0].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        activation_hessian_scores(model, 1, [bad])
    with pytest.raises(ValueError, match="non-finite"):
        weight_hessian_scores(model, [d2.kernel], [np.full((2, 6), np.inf, "float32")])
    with pytest.raises(ValueError, match="granularity"):
        activation_hessian_scores(model, 1, data(), granularity="layer")
    with pytest.raises(ValueError, match="n_interest"):
        activation_hessian_scores(model, 2, data())
    with pytest.raises(ValueError, match="inputs"):
        activation_hessian_scores(model, 1, [[data()[0], data()[0]]])
    with pytest.raises(ValueError, match="channel_axis"):
        weight_hessian_scores(model, [d2.kernel], data(), granularity="channel", channel_axis=[0, 1])


def test_sample_scores_per_sample_closed_form_and_mean():
    model, _, _, _, w2 = linear_model()
    x = np.random.default_rng(3).normal(size=(7, 6)).astype("float32")
    scores = activation_hessian_sample_scores(model, 1, [x], config=PRECISE)
    assert scores.shape == (7, 1)
    np.testing.assert_allclose(
        scores[:, 0], np.sum(w2**2), rtol=0.1
    )  # linear head: ||W2||^2 for every sample
    total = activation_hessian_scores(model, 1, [[x]], config=PRECISE)[0]
    np.testing.assert_allclose(scores.mean(), total, rtol=0.05)
