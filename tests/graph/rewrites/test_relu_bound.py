"""bound_relu_to_power_of_2: W1 -> ReLU(max m) -> W2 rescaled so the bound is a power of two, same function."""

from __future__ import annotations

import math

import keras
import numpy as np
from helpers import assert_model_untouched, flagged_float, randomize_biases
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from keras import layers

from kerasq.builder import build_model
from kerasq.graph import read_model
from kerasq.graph.rewrites.activation_split import split_activations
from kerasq.graph.rewrites.relu_bound import bound_relu_to_power_of_2, power_of_2_bound


def _outputs(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(t) for t in keras.tree.flatten(model(x, training=False))]


def assert_same_function(model: keras.Model, graph, x: np.ndarray) -> None:
    expected = _outputs(model, x)
    got = _outputs(build_model(graph).model, x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5 * scale)


def _inputs(model: keras.Model, seed: int, scale: float = 4.0) -> np.ndarray:
    shape = (4, *model.inputs[0].shape[1:])
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def _weighted(kind: str, channels: int, use_bias: bool, name: str) -> layers.Layer:
    if kind == "dense":
        return layers.Dense(channels, use_bias=use_bias, name=name)
    if kind == "depthwise_conv":
        return layers.DepthwiseConv2D(3, padding="same", use_bias=use_bias, name=name)
    return layers.Conv2D(channels, 3, padding="same", use_bias=use_bias, name=name)


def test_power_of_2_bound():
    assert power_of_2_bound(6.0) == 8.0
    assert power_of_2_bound(0.3) == 0.5
    assert power_of_2_bound(4.0) == 4.0
    assert power_of_2_bound(4.000001) == 8.0
    assert power_of_2_bound(2.0**-3) == 2.0**-3


bounds = st.floats(0.05, 20.0).filter(lambda m: not math.log2(m).is_integer())


@settings(max_examples=25, deadline=None)
@given(
    first=st.sampled_from(["conv", "dense", "depthwise_conv"]),
    second=st.sampled_from(["conv", "dense", "depthwise_conv"]),
    channels=st.integers(1, 6),
    bias1=st.booleans(),
    bias2=st.booleans(),
    bound=bounds,
    seed=st.integers(0, 2**16),
)
def test_bounded_relu_becomes_power_of_2(first, second, channels, bias1, bias2, bound, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5, 5, channels))
    x = _weighted(first, channels, bias1, "w1")(inputs)
    x = layers.ReLU(max_value=bound, name="relu")(x)
    x = _weighted(second, channels, bias2, "w2")(x)
    model = keras.Model(inputs, layers.Flatten(name="flat")(x))
    randomize_biases(model, seed)
    graph = read_model(model)
    new = bound_relu_to_power_of_2(graph)
    assert [n.name for n in new.nodes] == [n.name for n in graph.nodes]  # no node added or removed
    target = power_of_2_bound(bound)
    assert new.node("relu").config["max_value"] == target and new.node("relu").kind == "relu"
    s = target / bound
    w1_old, w1_new = graph.node("w1").layer_weights, new.node("w1").weights
    w2_old, w2_new = graph.node("w2").layer_weights, new.node("w2").weights
    for old, got in zip(w1_old, w1_new, strict=True):
        np.testing.assert_allclose(got, old * s, rtol=1e-6)
    np.testing.assert_allclose(w2_new[0], w2_old[0] / s, rtol=1e-6)
    if bias2:
        np.testing.assert_array_equal(w2_new[1], w2_old[1])
    x = _inputs(model, seed, scale=2.0 + bound)
    clipped = np.asarray(keras.Model(inputs, model.get_layer("relu").output)(x))
    assume(np.any(clipped == np.float32(bound)))  # the bound actually matters for this example
    assert_same_function(model, new, x)


@settings(max_examples=15, deadline=None)
@given(style=st.sampled_from(["relu6_layer", "activation", "ops", "split"]), seed=st.integers(0, 2**16))
def test_relu6_forms_become_relu8(style, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    conv = layers.Conv2D(4, 3, padding="same", name="w1", activation="relu6" if style == "split" else None)
    x = conv(inputs)
    if style == "relu6_layer":
        x = layers.ReLU(6.0, name="r6")(x)
    elif style == "activation":
        x = layers.Activation("relu6", name="r6")(x)
    elif style == "ops":
        x = keras.ops.relu6(x)
    model = keras.Model(inputs, layers.Dense(3, name="w2")(x))
    randomize_biases(model, seed)
    graph = read_model(model)
    if style == "split":
        graph = split_activations(graph)
    relu_node = graph.nodes[1]
    assert relu_node.kind == "relu6"
    new = bound_relu_to_power_of_2(graph)
    assert len(new.nodes) == len(graph.nodes)
    new_relu = new.nodes[1]
    assert new_relu.kind == "relu" and new_relu.config["max_value"] == 8.0
    assert isinstance(new_relu.op, layers.ReLU)
    assert_same_function(model, new, _inputs(model, seed))


def test_chain_of_bounded_relus():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8,))
    x = layers.ReLU(6.0, name="r1")(layers.Dense(8, name="d1")(inputs))
    x = layers.ReLU(3.0, name="r2")(layers.Dense(8, name="d2")(x))
    x = layers.ReLU(0.7, name="r3")(layers.Dense(8, name="d3")(x))
    model = keras.Model(inputs, layers.Dense(2, name="d4")(x))
    randomize_biases(model, 7)
    graph = read_model(model)
    new = bound_relu_to_power_of_2(graph)
    assert [new.node(r).config["max_value"] for r in ("r1", "r2", "r3")] == [8.0, 4.0, 1.0]
    # d2 is divided by 8/6 (as W2 of r1) and multiplied by 4/3 (as W1 of r2): net factor 1
    np.testing.assert_allclose(new.node("d2").weights[0], graph.node("d2").layer_weights[0], rtol=1e-6)
    np.testing.assert_allclose(
        new.node("d2").weights[1], graph.node("d2").layer_weights[1] * 4 / 3, rtol=1e-6
    )
    assert_same_function(model, new, _inputs(model, 7))


def test_users_layers_are_untouched():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers.Dense(2)(layers.ReLU(5.0)(layers.Dense(4)(inputs))))
    assert_model_untouched(model, bound_relu_to_power_of_2)


# ---------------------------------------------------------------- negative cases: nothing may change


def _chain(relu=lambda: layers.ReLU(5.0), first=lambda: layers.Dense(4), second=lambda: layers.Dense(3)):
    def make() -> keras.Model:
        inputs = keras.Input((6,))
        return keras.Model(inputs, second()(relu()(first()(inputs))))

    return make


def _model_relu_output_used_twice() -> keras.Model:
    inputs = keras.Input((6,))
    r = layers.ReLU(5.0)(layers.Dense(4)(inputs))
    return keras.Model(inputs, layers.Concatenate()([layers.Dense(3)(r), r]))


def _model_relu_output_is_output() -> keras.Model:
    inputs = keras.Input((6,))
    r = layers.ReLU(5.0)(layers.Dense(4)(inputs))
    return keras.Model(inputs, [layers.Dense(3)(r), r])


def _model_w1_output_used_twice() -> keras.Model:
    inputs = keras.Input((6,))
    y = layers.Dense(4)(inputs)
    return keras.Model(inputs, layers.Add()([layers.Dense(4)(layers.ReLU(5.0)(y)), y]))


def _model_shared_w2() -> keras.Model:
    inputs = keras.Input((4,))
    shared = layers.Dense(4)
    return keras.Model(inputs, shared(layers.ReLU(5.0)(layers.Dense(4)(shared(inputs)))))


def _model_shared_relu() -> keras.Model:
    inputs = keras.Input((4,))
    relu = layers.ReLU(5.0)
    return keras.Model(inputs, layers.Dense(2)(relu(layers.Dense(4)(relu(inputs)))))


NEGATIVE_MODELS = {
    "relu without max_value": _chain(relu=lambda: layers.ReLU()),
    "bound already a power of two": _chain(relu=lambda: layers.ReLU(4.0)),
    "leaky bounded relu": _chain(relu=lambda: layers.ReLU(5.0, negative_slope=0.1)),
    "thresholded relu": _chain(relu=lambda: layers.ReLU(5.0, threshold=0.5)),
    "plain relu activation": _chain(relu=lambda: layers.Activation("relu")),
    "w1 has an activation": _chain(first=lambda: layers.Dense(4, activation="tanh")),
    "w1 not weighted": _chain(first=lambda: layers.Activation("tanh")),
    "w2 not weighted": _chain(second=lambda: layers.Activation("tanh")),
    "relu output used twice": _model_relu_output_used_twice,
    "relu output is a model output": _model_relu_output_is_output,
    "w1 output used twice": _model_w1_output_used_twice,
    "shared w2": _model_shared_w2,
    "shared relu": _model_shared_relu,
}


def test_refuses_patterns_it_must_not_touch():
    for name, make in NEGATIVE_MODELS.items():
        keras.utils.set_random_seed(0)
        model = make()
        graph = read_model(model)
        new = bound_relu_to_power_of_2(graph)
        assert new is graph, name
        assert_same_function(model, new, _inputs(model, 0))


def test_refuses_float_nodes():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    x = layers.ReLU(5.0, name="relu")(layers.Dense(4, name="w1")(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="w2")(x))
    graph = read_model(model)
    for name in ("w1", "relu", "w2"):
        flagged = flagged_float(graph, name)
        assert bound_relu_to_power_of_2(flagged) is flagged
    assert bound_relu_to_power_of_2(graph) is not graph  # the same graph without the flag is rewritten
