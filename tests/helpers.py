"""Small helpers shared by tests (importable because pyproject sets pytest pythonpath=tests)."""

from __future__ import annotations

import keras
import numpy as np


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y) * 100.0)


def mct_generator(x: np.ndarray, batch_size: int = 64):
    """MCT-style representative data: a zero-argument callable yielding [batch] lists."""

    def gen():
        for i in range(0, len(x), batch_size):
            yield [x[i : i + batch_size]]

    return gen


def randomize_biases(model: keras.Model, seed: int) -> None:
    """Give every (kernel, bias) layer random biases, so rewrites are tested with non-zero biases."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if len(weights) == 2:
            layer.set_weights([weights[0], rng.normal(size=weights[1].shape).astype("float32")])


def random_bn(x, seed: int, name: str | None = None):
    """``x`` through a new BatchNormalization with random statistics (so it is not the identity)."""
    bn = keras.layers.BatchNormalization(name=name)
    y = bn(x)
    c = x.shape[-1]
    rng = np.random.default_rng(seed)
    bn.set_weights(
        [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 2, c)]
    )
    return y


def calibrate_batch_norms(model: keras.Model, x: np.ndarray) -> None:
    """Moving statistics of every BatchNormalization (nested ones too) from one training-mode pass over
    ``x``: freshly initialised networks with many BNs (MobileNetV3) otherwise shrink their signal to ~1e-11,
    and every comparison of their outputs is trivially equal."""
    stack, bns = list(model.layers), []
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []))
        if isinstance(layer, keras.layers.BatchNormalization):
            bns.append((layer, layer.momentum))
            layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in bns:
        layer.momentum = momentum


def assert_same_function(model: keras.Model, graph, seed: int = 0) -> None:
    """The float model rebuilt from ``graph`` computes what ``model`` computes (rtol 1e-5)."""
    from kerasq.builder import build_model

    shape = (3, *model.inputs[0].shape[1:])
    x = np.random.default_rng(seed).normal(size=shape).astype("float32")
    expected = [np.asarray(t) for t in keras.tree.flatten(model(x, training=False))]
    got = [np.asarray(t) for t in keras.tree.flatten(build_model(graph).model(x, training=False))]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * scale)


def assert_rewrite_refuses(makers, rewrite) -> None:
    """``rewrite`` returns the very same graph for every model ``makers`` build (and the function is kept)."""
    from kerasq.graph import read_model

    for make in makers:
        keras.utils.set_random_seed(0)
        model = make()
        graph = read_model(model)
        new = rewrite(graph)
        assert new is graph, make.__name__
        assert_same_function(model, new)


def assert_model_untouched(model: keras.Model, rewrite) -> None:
    """Reading ``model`` and applying ``rewrite`` leaves the user's model's config and weights as they were."""
    from kerasq.graph import read_model

    before, config = [w.copy() for w in model.get_weights()], model.get_config()
    rewrite(read_model(model))
    assert model.get_config() == config
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def flagged_float(graph, name: str):
    """``graph`` with node ``name`` marked to stay float (as a platform or user rule would)."""
    from dataclasses import replace

    return graph.with_nodes([replace(n, float_reason="user") if n.name == name else n for n in graph.nodes])
