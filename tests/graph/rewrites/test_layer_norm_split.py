"""Layer normalizations written as steps kerasq quantizes one by one: same float function, integer files."""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from helpers import assert_model_untouched, assert_same_function
from keras import layers

import kerasq
from kerasq.export import QuantizationFormat
from kerasq.export.runtimes import float_tensors
from kerasq.export.tflite import convert
from kerasq.graph import read_model
from kerasq.graph.rewrites import split_layer_norms


def _randomize(norm: layers.LayerNormalization, seed: int) -> None:
    rng = np.random.default_rng(seed)
    norm.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in norm.get_weights()])


def norms_net() -> keras.Model:
    """Layer normalizations on rank-4, rank-3 and rank-2 tensors, with and without gamma / beta."""
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    x = layers.LayerNormalization(epsilon=1e-6, name="ln4")(x)
    x = layers.Reshape((36, 8))(layers.Dense(8)(x))
    x = layers.LayerNormalization(center=False, name="ln3")(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.LayerNormalization(scale=False, center=False, name="ln2")(x)
    model = keras.Model(inputs, layers.Dense(4)(x))
    for i, name in enumerate(("ln4", "ln3")):
        _randomize(model.get_layer(name), i)
    return model


@functools.cache
def _layer_scale_class() -> type:
    """keras.applications' ConvNeXt LayerScale (not exported by Keras): taken from a ConvNeXtTiny."""
    convnext = keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), include_top=False)
    return type(next(layer for layer in convnext.layers if type(layer).__name__ == "LayerScale"))


def test_the_split_graph_computes_the_same_function():
    keras.utils.set_random_seed(0)
    model = norms_net()
    graph = split_layer_norms(read_model(model))
    assert not any(isinstance(n.op, layers.LayerNormalization) for n in graph.nodes)
    kinds = [n.kind for n in graph.nodes]
    assert kinds.count("rsqrt") == 3 and kinds.count("mean") == 6
    assert_same_function(model, graph)
    assert_model_untouched(model, split_layer_norms)


def test_norms_over_other_axes_are_left_alone():
    inputs = keras.Input((6, 8))
    model = keras.Model(inputs, layers.LayerNormalization(axis=1)(inputs))
    graph = read_model(model)
    assert split_layer_norms(graph) is graph


def test_layer_scale_becomes_a_depthwise_affine():
    inputs = keras.Input((6, 6, 8))
    scale = _layer_scale_class()(init_values=0.5, projection_dim=8, name="scale")
    model = keras.Model(inputs, scale(layers.Conv2D(8, 1)(inputs)))
    graph = split_layer_norms(read_model(model))
    assert [n.kind for n in graph.nodes] == ["conv", "depthwise_conv"]
    assert_same_function(model, graph)


@pytest.mark.parametrize("platform", ["tflite", "imx500"])
def test_a_layer_norm_net_quantizes_and_exports_fully_integer(platform):
    keras.utils.set_random_seed(0)
    model = norms_net()
    data = np.random.default_rng(0).normal(size=(64, 6, 6, 3)).astype("float32")
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        model, data, target_platform_capabilities=kerasq.get_target_platform_capabilities(platform)
    )
    assert info.float_layers == {}
    reference, quantized = model.predict(data, verbose=0), q_model.predict(data, verbose=0)
    sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - quantized) ** 2))
    assert sqnr >= 25.0  # 8-bit grids on every step
    conversion = convert(q_model, QuantizationFormat.INT8)
    assert float_tensors(conversion.flatbuffer) == []
    assert conversion.verification.sqnr_db >= 30.0
    assert sum("rsqrt" in r.reason for r in conversion.requantized) == 3  # the dropped epsilon, reported
