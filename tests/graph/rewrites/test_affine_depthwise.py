"""Standalone BatchNormalization / Normalization / Rescaling become 1x1 depthwise convolutions (same function)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_model_untouched, assert_same_function, random_bn
from keras import layers, ops

from kerasq.graph import read_model
from kerasq.graph.rewrites import fold_batch_norms
from kerasq.graph.rewrites.affine_depthwise import compose, lower_affines, per_channel


def _random_bn(x, seed: int):
    return random_bn(x, seed, name=f"bn_{seed}")


def preprocessing_net() -> keras.Model:
    """EfficientNetV2's input: Rescaling then per-channel Normalization, then a conv."""
    image = keras.Input((8, 8, 3))
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(image)
    x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.05, 0.06, 0.07], name="norm")(x)
    return keras.Model(image, layers.Conv2D(4, 3, padding="same", name="stem")(x))


def pre_activation_net() -> keras.Model:
    """ResNetV2: BN -> ReLU -> conv, and a BN after an Add (neither has a conv to fold into)."""
    image = keras.Input((8, 8, 4))
    x = layers.ReLU()(_random_bn(image, 1))
    x = layers.Conv2D(4, 3, padding="same")(x)
    x = layers.Add()([x, image])
    return keras.Model(image, layers.ReLU()(_random_bn(x, 2)))


def ranks_net() -> keras.Model:
    """Per-channel Rescaling and an inverted Normalization on a sequence, and a BN after a Dense with an
    activation ([batch, channels])."""
    image = keras.Input((6, 5))
    x = layers.Rescaling([0.5, 2.0, -1.0, 3.0, 0.25], offset=0.1, name="seq_scale")(image)
    x = layers.Normalization(mean=np.arange(5.0), variance=np.arange(1.0, 6.0), invert=True, name="seq_norm")(
        x
    )
    x = layers.Conv1D(4, 3)(x)
    x = layers.Dense(6, activation="relu")(layers.Flatten()(x))
    return keras.Model(image, layers.Dense(2)(_random_bn(x, 3)))


@pytest.mark.parametrize("make", [preprocessing_net, pre_activation_net, ranks_net])
def test_rewritten_graph_computes_the_same_function(make):
    keras.utils.set_random_seed(0)
    model = make()
    graph = lower_affines(fold_batch_norms(read_model(model)))
    assert not any(n.kind in ("batch_norm", "normalization", "rescaling") for n in graph.nodes)
    assert_same_function(model, graph)
    assert_model_untouched(model, lambda g: lower_affines(fold_batch_norms(g)))


def test_rescaling_and_normalization_compose_into_one_depthwise():
    keras.utils.set_random_seed(0)
    graph = lower_affines(read_model(preprocessing_net()))
    assert [n.kind for n in graph.nodes] == ["depthwise_conv", "conv"]
    kernel, bias = graph.node("norm").weights
    std = np.sqrt([0.05, 0.06, 0.07])
    np.testing.assert_allclose(kernel.reshape(-1), 1 / (127.5 * std), rtol=1e-6)
    np.testing.assert_allclose(bias, (-1 - np.array([0.485, 0.456, 0.406])) / std, rtol=1e-6)


def test_two_dimensional_affine_runs_between_reshapes():
    keras.utils.set_random_seed(0)
    graph = lower_affines(read_model(ranks_net()))
    kinds = [n.kind for n in graph.nodes]
    assert kinds == ["depthwise_conv", "conv", "flatten", "dense", "reshape", "depthwise_conv", "reshape",
                     "dense"]  # fmt: skip
    assert graph.node("bn_3").weights[0].shape == (1, 1, 6, 1)
    assert graph.node("seq_norm").weights[0].shape == (1, 5, 1)  # Rescaling and Normalization composed


def test_affines_off_the_channel_axis_are_left_alone():
    image = keras.Input((4, 4, 3))
    x = layers.BatchNormalization(axis=1)(image)
    x = layers.Normalization(axis=(1, 2), mean=np.zeros((4, 4)), variance=np.ones((4, 4)))(x)
    x = layers.Rescaling(np.full((4, 1, 1), 2.0))(x)  # varies along the rows, not the channels
    model = keras.Model(image, x)
    graph = read_model(model)
    assert lower_affines(graph) is graph


def test_a_shared_affine_output_ends_a_chain():
    """An affine whose output is read twice stays its own convolution; its readers are lowered apart."""
    image = keras.Input((4, 4, 3))
    x = layers.Rescaling(2.0, offset=1.0, name="first")(image)
    a = layers.Rescaling(3.0, name="a")(x)
    b = layers.Rescaling(-1.0, name="b")(x)
    model = keras.Model(image, layers.Add(name="add")([a, b]))
    graph = lower_affines(read_model(model))
    assert [(n.name, n.kind) for n in graph.nodes] == [
        ("first", "depthwise_conv"),
        ("a", "depthwise_conv"),
        ("b", "depthwise_conv"),
        ("add", "add"),
    ]
    assert_same_function(model, graph)


def constant_ops_net() -> keras.Model:
    """MobileNetV3's hard sigmoid (``relu6(x + 3) * (1 / 6)`` in keras.ops), ``2 - x`` and a per-channel
    product."""
    image = keras.Input((4, 4, 3))
    x = ops.multiply(layers.ReLU(6.0)(ops.add(image, 3.0)), 1.0 / 6.0)
    x = ops.subtract(2.0, x)
    x = ops.multiply(x, np.array([1.0, -2.0, 0.5], "float32"))
    return keras.Model(image, layers.Conv2D(2, 1)(x))


def test_constant_keras_ops_become_depthwise_convs():
    keras.utils.set_random_seed(0)
    model = constant_ops_net()
    graph = lower_affines(read_model(model))
    # (+3), relu6, then (* 1/6, 2 - x, * c) composed into one
    assert [n.kind for n in graph.nodes] == ["depthwise_conv", "relu6", "depthwise_conv", "conv"]
    kernel, bias = graph.nodes[2].weights
    np.testing.assert_allclose(kernel.reshape(-1), [-1 / 6, 2 / 6, -0.5 / 6], rtol=1e-6)
    np.testing.assert_allclose(bias, [2.0, -4.0, 1.0], rtol=1e-6)
    assert_same_function(model, graph)


def test_constants_that_change_the_shape_or_dtype_are_left_alone():
    image = keras.Input((4, 4, 3))
    wider = ops.add(image, np.zeros((2, 4, 4, 3), "float32"))  # broadcasts the batch
    promoted = ops.multiply(image, np.ones(3, "float64"))  # float64 result
    model = keras.Model(image, [wider, promoted])
    graph = read_model(model)
    assert lower_affines(graph) is graph


def test_per_channel_and_compose():
    np.testing.assert_array_equal(per_channel(2.0, 3, 4), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(per_channel(np.arange(3.0).reshape(1, 1, 1, 3), 3, 4), [0, 1, 2])
    assert per_channel(np.ones((2, 3)), 3, 4) is None
    assert per_channel(np.ones(4), 3, 4) is None
    scale, offset = compose((np.array([2.0]), np.array([1.0])), (np.array([3.0]), np.array([-1.0])))
    assert (scale[0], offset[0]) == (6.0, 2.0)  # 3 * (2x + 1) - 1
