"""shift_negative: activation shifted up by s, the next layer's bias absorbs it; the float function is kept."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from helpers import assert_same_function, randomize_biases
from hypothesis import example, given, settings
from hypothesis import strategies as st
from keras import layers

from kerasq.builder import build_model
from kerasq.graph import read_model
from kerasq.graph.rewrites.shift_negative import same_padding, shift_negative, snc_candidates
from kerasq.layers import ShiftedActivation

ACTIVATIONS = ["swish", "gelu", "hard_swish", "selu", "elu_layer", "leaky_relu_layer", "prelu", "ops_silu"]
READERS = ["conv2d", "depthwise", "dense", "conv1d"]
OPTIONS = st.fixed_dictionaries(
    dict(padding=st.sampled_from(["same", "valid"]), strides=st.sampled_from([1, 2]),
         kernel=st.sampled_from([1, 3, 5]), groups=st.sampled_from([1, 2]), multiplier=st.sampled_from([1, 2]))
)  # fmt: skip


def _activation(kind: str, x, seed: int):
    """Apply the named activation (as node "act") to ``x``."""
    if kind == "ops_silu":
        return keras.ops.silu(x)  # a keras.ops node (named "silu", "silu_1", ...)
    if kind == "elu_layer":
        return layers.ELU(alpha=0.7, name="act")(x)
    if kind == "leaky_relu_layer":
        return layers.LeakyReLU(0.2, name="act")(x)
    if kind == "prelu":
        layer = layers.PReLU(name="act")
        y = layer(x)
        alpha = np.random.default_rng(seed).uniform(-0.5, 0.5, size=layer.alpha.shape)
        layer.set_weights([alpha.astype("float32")])
        return y
    return layers.Activation(kind, name="act")(x)


def _model(act: str, reader: str, channels: int, spatial: int, options: dict, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    if reader == "dense":
        inputs = keras.Input((channels * 2,))
        x = layers.Dense(channels, name="stem")(inputs)
    elif reader == "conv1d":
        inputs = keras.Input((spatial, channels))
        x = layers.Conv1D(channels, 3, padding="same", name="stem")(inputs)
    else:
        inputs = keras.Input((spatial, spatial, channels))
        x = layers.Conv2D(channels, 3, padding="same", name="stem")(inputs)
    x = _activation(act, x, seed)
    padding, strides, kernel = options["padding"], options["strides"], options["kernel"]
    if reader == "dense":
        x = layers.Dense(channels + 1, name="reader")(x)
    elif reader == "conv1d":
        x = layers.Conv1D(channels + 1, kernel, strides=strides, padding=padding, name="reader")(x)
    elif reader == "depthwise":
        x = layers.DepthwiseConv2D(3, strides=strides, padding=padding, depth_multiplier=options["multiplier"],
                                   name="reader")(x)  # fmt: skip
    else:
        x = layers.Conv2D(channels, kernel, strides=strides, padding=padding, groups=options["groups"],
                          name="reader")(x)  # fmt: skip
    model = keras.Model(inputs, x)
    randomize_biases(model, seed)
    return model


def _same_stride_2(kernel: int = 3, groups: int = 1, multiplier: int = 1) -> dict:
    return {"padding": "same", "strides": 2, "kernel": kernel, "groups": groups, "multiplier": multiplier}


@settings(max_examples=40, deadline=None)
@given(
    act=st.sampled_from(ACTIVATIONS),
    reader=st.sampled_from(READERS),
    channels=st.integers(2, 6),
    spatial=st.integers(5, 9),
    options=OPTIONS,
    shift=st.floats(0.01, 3.0),
    seed=st.integers(0, 2**16),
)
# Asymmetric TF "same" padding (stride 2, even size): more padding after than before.
@example("prelu", "conv2d", 4, 6, _same_stride_2(kernel=3, groups=2), 1.5, 0)
@example("elu_layer", "depthwise", 3, 8, _same_stride_2(multiplier=2), 2.0, 1)
@example("ops_silu", "conv1d", 3, 6, _same_stride_2(kernel=5), 0.5, 2)
def test_shift_keeps_the_float_function(act, reader, channels, spatial, options, shift, seed):
    if options["groups"] == 2:
        channels += channels % 2
    model = _model(act, reader, channels, spatial, options, seed)
    graph = read_model(model)
    name = graph.producers()[graph.node("reader").inputs[0]].name  # "act", or the ops call's name
    assert name == "act" or act == "ops_silu"
    assert snc_candidates(graph) == [name]
    old_act, old_reader = graph.node(name), graph.node("reader")
    out = old_act.outputs[0]
    old_shape = graph.tensors[out].shape
    new = shift_negative(graph, {name: shift})
    assert_same_function(model, new)
    node, new_reader = new.node(name), new.node("reader")
    assert isinstance(node.op, ShiftedActivation) and node.kind == old_act.kind
    assert node.config["shift"] == shift and new_reader.config["use_bias"] is True
    if reader == "dense":
        assert node.op.padding is None
    else:  # "same" moved into the activation node; "valid" stays
        assert new_reader.config["padding"] == "valid"
        assert (node.op.padding is not None) == (options["padding"] == "same")
    # The input graph is untouched, and the new graph records the padded shape the rebuilt model has.
    assert graph.node(name) is old_act and graph.node("reader") is old_reader
    assert graph.tensors[out].shape == old_shape
    assert tuple(build_model(new).tensors[out].shape) == new.tensors[out].shape


def test_shift_changes_the_activation_and_bias():
    model = _model("swish", "conv2d", 4, 6, {"padding": "same", "strides": 1, "kernel": 3, "groups": 1}, 0)
    graph = read_model(model)
    new = shift_negative(graph, {"act": 0.5})
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype("float32")
    built = build_model(new)
    probe = keras.Model(built.model.input, built.tensors[new.node("act").outputs[0]])
    shifted = np.asarray(probe(x))
    assert shifted.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(shifted[:, 0, :, :], 0.5)  # the padded border holds the shift
    kernel, bias = new.node("reader").weights
    old_bias = model.get_layer("reader").get_weights()[1]
    np.testing.assert_allclose(bias, old_bias - 0.5 * kernel.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)


def test_reader_without_bias_and_with_activation():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((7, 7, 3))
    x = layers.Conv2D(4, 3, name="stem")(inputs)
    x = layers.Activation("gelu", name="act")(x)
    x = layers.Conv2D(5, 3, padding="same", use_bias=False, activation="sigmoid", name="reader")(x)
    model = keras.Model(inputs, x)
    new = shift_negative(read_model(model), {"act": 2.0})
    assert len(new.node("reader").weights) == 2
    assert_same_function(model, new)


def test_conv3d_and_depthwise1d_readers():
    for make in (lambda: layers.Conv3D(3, 3, strides=2, padding="same", name="reader"),
                 lambda: layers.DepthwiseConv1D(3, padding="same", depth_multiplier=2, name="reader")):  # fmt: skip
        keras.utils.set_random_seed(0)
        inputs = keras.Input((5, 6, 7, 2) if "Conv3D" in type(make()).__name__ else (7, 2))
        x = layers.ELU(name="act")(inputs)
        model = keras.Model(inputs, make()(x))
        randomize_biases(model, 0)
        assert_same_function(model, shift_negative(read_model(model), {"act": 1.0}))


def test_same_padding_matches_tf():
    assert same_padding((6,), (3,), (2,), (1,)) == [(0, 1)]
    assert same_padding((7, 5), (5, 1), (1, 1), (1, 1)) == [(2, 2), (0, 0)]
    assert same_padding((8,), (3,), (1,), (2,)) == [(2, 2)]


def _chain(reader=None, act=None):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = (act or layers.Activation("swish", name="act"))(x)
    return inputs, x, (reader or layers.Conv2D(4, 3, padding="same", name="reader"))


def _read_twice():
    inputs, x, reader = _chain()
    return keras.Model(inputs, [reader(x), layers.Conv2D(2, 1)(x)])


def _model_output():
    inputs, x, reader = _chain()
    return keras.Model(inputs, [reader(x), x])


def _transpose():
    inputs, x, reader = _chain(reader=layers.Conv2DTranspose(4, 3, padding="same"))
    return keras.Model(inputs, reader(x))


def _separable():
    inputs, x, reader = _chain(reader=layers.SeparableConv2D(4, 3, padding="same"))
    return keras.Model(inputs, reader(x))


def _causal():
    inputs = keras.Input((8, 3))
    x = layers.Activation("swish", name="act")(layers.Conv1D(4, 3, name="stem")(inputs))
    return keras.Model(inputs, layers.Conv1D(4, 3, padding="causal")(x))


def _relu():
    inputs, x, reader = _chain(act=layers.ReLU(name="act"))
    return keras.Model(inputs, reader(x))


def _shared_reader():
    inputs, x, reader = _chain()
    return keras.Model(inputs, [reader(x), reader(layers.Conv2D(4, 1)(inputs))])


def _reader_reads_two():
    inputs, x, _ = _chain()
    return keras.Model(inputs, layers.Add()([x, x]))


def _approximate_gelu():
    inputs = keras.Input((8, 8, 3))
    x = keras.ops.gelu(layers.Conv2D(4, 1, name="stem")(inputs), approximate=True)
    return keras.Model(inputs, layers.Conv2D(4, 1, name="reader")(x))


REFUSED = [_read_twice, _model_output, _transpose, _separable, _causal, _relu, _shared_reader,
           _reader_reads_two, _approximate_gelu]  # fmt: skip


@pytest.mark.parametrize("make", REFUSED, ids=lambda f: f.__name__)
def test_non_candidates(make):
    keras.utils.set_random_seed(0)
    graph = read_model(make())
    assert snc_candidates(graph) == []
    act = next(n.name for n in graph.nodes if n.kind in ("swish", "relu", "gelu"))
    with pytest.raises(ValueError, match=act):
        shift_negative(graph, {act: 1.0})


def test_positive_control_for_refusals():
    inputs, x, reader = _chain()
    assert snc_candidates(read_model(keras.Model(inputs, reader(x)))) == ["act"]


@pytest.mark.parametrize("shift", [0.0, -1.0, math.inf, math.nan, True, "1"])
def test_bad_shift_is_refused(shift):
    inputs, x, reader = _chain()
    graph = read_model(keras.Model(inputs, reader(x)))
    with pytest.raises(ValueError, match="'act'"):
        shift_negative(graph, {"act": shift})


def test_unknown_name_and_empty_mapping():
    inputs, x, reader = _chain()
    graph = read_model(keras.Model(inputs, reader(x)))
    with pytest.raises(ValueError, match="'nope'"):
        shift_negative(graph, {"nope": 1.0})
    with pytest.raises(ValueError, match="'stem'"):
        shift_negative(graph, {"stem": 1.0})
    assert shift_negative(graph, {}) is graph


@pytest.mark.parametrize("act", ["swish", "prelu", "leaky_relu_layer"])
def test_saved_model_round_trip(act, tmp_path):
    options = {"padding": "same", "strides": 2, "kernel": 3, "groups": 1}
    model = _model(act, "conv2d", 3, 7, options, seed=5)
    built = build_model(shift_negative(read_model(model), {"act": 0.75})).model
    path = tmp_path / "shifted.keras"
    built.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("act"), ShiftedActivation)
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(built(x)))
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_prelu_weights_round_trip():
    layer = ShiftedActivation(keras.layers.serialize(layers.PReLU()), shift=1.0, padding=[(1, 2)])
    y = layer(keras.ops.zeros((2, 4, 3)))
    assert tuple(y.shape) == layer.compute_output_shape((2, 4, 3)) == (2, 7, 3)
    alpha = np.arange(12, dtype="float32").reshape(4, 3) / 10
    layer.set_weights([alpha])
    np.testing.assert_array_equal(layer.get_weights()[0], alpha)
    clone = ShiftedActivation.from_config(layer.get_config())
    clone.build((2, 4, 3))
    clone.set_weights(layer.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))
    assert clone.get_config() == layer.get_config()
