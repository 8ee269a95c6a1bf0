"""Reading Functional, Sequential, nested, multi-input and keras.ops graphs; rejecting subclassed models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import assert_same_function
from keras import layers, ops

from kerasq.builder import build_model
from kerasq.graph import UnsupportedModelError, read_model


def _nested_model() -> keras.Model:
    inner_in = keras.Input((8, 8, 3))
    y = layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, layers.ReLU(name="inner_relu")(y), name="backbone")
    image, vec = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="vec")
    x = layers.GlobalAveragePooling2D(name="gap")(backbone(image))
    shared = layers.Dense(4, name="shared")
    out = layers.Concatenate(name="concat")([shared(x), shared(layers.Dense(4, name="side")(vec))])
    return keras.Model([image, vec], ops.relu(out), name="outer")


def test_nested_multi_input_graph_is_flattened():
    model = _nested_model()
    graph = read_model(model)
    names = [n.name for n in graph.nodes]
    assert names[:2] == ["inner_conv", "inner_relu"]
    assert "shared" in names and "shared_call1" in names
    assert graph.input_names == ["image", "vec"]
    kinds = {n.name: n.kind for n in graph.nodes}
    assert kinds["inner_conv"] == "conv" and kinds["concat"] == "concat"
    assert [n.kind for n in graph.nodes][-1] == "relu"  # the keras.ops.relu call


def test_rebuilt_graph_computes_the_same_function():
    model = _nested_model()
    data = [np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32"),
            np.random.default_rng(1).normal(size=(4, 5)).astype("float32")]  # fmt: skip
    rebuilt = build_model(read_model(model)).model
    np.testing.assert_allclose(rebuilt.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)
    shared = [layer for layer in rebuilt.layers if layer.name == "shared"]
    assert len(shared) == 1  # a shared layer stays one layer


def test_reading_leaves_the_users_layers_alone():
    model = _nested_model()
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    config = model.get_config()
    read_model(model)
    assert model.get_config() == config
    for layer in model.layers:
        for a, b in zip(before[layer.name], layer.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_nested_sequential_inside_the_graph_feeds_every_consumer():
    """ConvNeXt's stem and downsampling blocks: a Sequential called on an inner tensor, its output read by a
    conv and by an Add. (Reading once gave the consumers a tensor no node produced: KeyError in the builder.)"""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 1, name="before")(image)
    stem = keras.Sequential(
        [layers.Conv2D(6, 2, strides=2, name="stem_conv"), layers.LayerNormalization(name="stem_norm")]
    )
    x = stem(x)
    model = keras.Model(image, layers.Add(name="add")([x, layers.Conv2D(6, 3, padding="same")(x)]))
    graph = read_model(model)
    produced = set(graph.inputs) | {t for n in graph.nodes for t in n.outputs}
    assert all(t in produced for n in graph.nodes for t in n.inputs)
    assert graph.node("stem_norm").outputs[0] in graph.node("add").inputs
    assert_same_function(model, graph)


def test_sequential_model():
    model = keras.Sequential([keras.Input((6,)), layers.Dense(3, activation="relu"), layers.Dense(2)])
    graph = read_model(model)
    assert [n.kind for n in graph.nodes] == ["dense", "dense"]


def test_unbuilt_sequential_gets_a_clear_error():
    model = keras.Sequential([layers.Dense(3)])
    with pytest.raises(UnsupportedModelError, match="not built"):
        read_model(model)


def test_subclassed_model_is_rejected_with_advice():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match="subclassed model.*Functional API"):
        read_model(net)


def test_non_model_is_rejected():
    with pytest.raises(UnsupportedModelError, match="keras.Model"):
        read_model("model.keras")
