"""collapse_residual: Add(x, conv(x)) folds into the conv's kernel without changing the float function."""

from __future__ import annotations

import keras
import numpy as np
from helpers import (
    assert_model_untouched,
    assert_rewrite_refuses,
    assert_same_function,
    flagged_float,
    randomize_biases,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from keras import layers

from kerasq.graph import read_model
from kerasq.graph.rewrites.residual_collapse import collapse_residual


def _residual_model(depthwise, k, channels, use_bias, conv_first, add_style, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((7, 7, channels))
    x = layers.Conv2D(channels, 3, padding="same", name="stem")(inputs)
    if depthwise:
        y = layers.DepthwiseConv2D(k, padding="same", use_bias=use_bias, name="res")(x)
    else:
        y = layers.Conv2D(channels, k, padding="same", use_bias=use_bias, name="res")(x)
    pair = [y, x] if conv_first else [x, y]
    out = layers.Add(name="add")(pair) if add_style == "layer" else pair[0] + pair[1]
    model = keras.Model(inputs, layers.ReLU(name="relu")(out))
    randomize_biases(model, seed)
    return model


@settings(max_examples=25, deadline=None)
@given(
    depthwise=st.booleans(),
    k=st.sampled_from([1, 3, 5]),
    channels=st.integers(1, 6),
    use_bias=st.booleans(),
    conv_first=st.booleans(),
    add_style=st.sampled_from(["layer", "ops"]),
    seed=st.integers(0, 2**16),
)
def test_residual_add_folds_into_conv(depthwise, k, channels, use_bias, conv_first, add_style, seed):
    model = _residual_model(depthwise, k, channels, use_bias, conv_first, add_style, seed)
    graph = read_model(model)
    new = collapse_residual(graph)
    assert len(new.nodes) == len(graph.nodes) - 1
    assert [n.kind for n in new.nodes] == ["conv", "depthwise_conv" if depthwise else "conv", "relu"]
    res = new.nodes[1]
    assert res.name == "res" and res.outputs == graph.nodes[2].outputs
    original_kernel = graph.node("res").layer_weights[0]
    diff = res.weights[0] - original_kernel
    assert np.count_nonzero(diff) == channels  # exactly the centre diagonal moved
    np.testing.assert_allclose(diff[k // 2, k // 2].sum(), channels, rtol=1e-5)  # float32 kernels
    assert_same_function(model, new, seed)


def test_two_blocks_in_a_row_both_fold():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 4))
    x = layers.Add()([inputs, layers.Conv2D(4, 3, padding="same")(inputs)])
    x = layers.Add()([layers.DepthwiseConv2D(3, padding="same")(x), x])
    model = keras.Model(inputs, x)
    randomize_biases(model, 3)
    new = collapse_residual(read_model(model))
    assert [n.kind for n in new.nodes] == ["conv", "depthwise_conv"]
    assert_same_function(model, new)


def test_conv1d_residual_folds():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((9, 3))
    model = keras.Model(inputs, inputs + layers.Conv1D(3, 5, padding="same")(inputs))
    randomize_biases(model, 4)
    new = collapse_residual(read_model(model))
    assert len(new.nodes) == 1
    assert_same_function(model, new)


def test_users_layers_are_untouched():
    assert_model_untouched(_residual_model(False, 3, 4, True, False, "layer", seed=0), collapse_residual)


# ---------------------------------------------------------------- negative cases: nothing may change


def _block(make_conv, shape=(6, 6, 4), name=""):
    def make() -> keras.Model:
        inputs = keras.Input(shape)
        return keras.Model(inputs, layers.Add()([inputs, make_conv()(inputs)]))

    make.__name__ = name
    return make


def _model_strided() -> keras.Model:
    inputs = keras.Input((1, 1, 4))  # 1x1 pixels keep shapes equal under stride 2
    return keras.Model(inputs, layers.Add()([inputs, layers.Conv2D(4, 3, strides=2, padding="same")(inputs)]))


def _model_activation() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    return keras.Model(
        inputs, layers.Add()([inputs, layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)])
    )


def _model_conv_output_used_twice() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    y = layers.Conv2D(4, 3, padding="same")(inputs)
    return keras.Model(inputs, layers.Multiply()([layers.Add()([inputs, y]), y]))


def _model_conv_output_is_model_output() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    y = layers.Conv2D(4, 3, padding="same")(inputs)
    return keras.Model(inputs, [layers.Add()([inputs, y]), y])


def _model_conv_reads_other_tensor() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    x = layers.ReLU()(inputs)
    return keras.Model(inputs, layers.Add()([inputs, layers.Conv2D(4, 3, padding="same")(x)]))


def _model_shared_conv() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    conv = layers.Conv2D(4, 3, padding="same")
    x = layers.Add()([inputs, conv(inputs)])
    return keras.Model(inputs, conv(x))


def _model_three_way_add() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    y = layers.Conv2D(4, 3, padding="same")(inputs)
    return keras.Model(inputs, layers.Add()([inputs, y, inputs]))


def _model_broadcast_add() -> keras.Model:
    inputs = keras.Input((6, 6, 1))
    return keras.Model(inputs, inputs + layers.Conv2D(3, 3, padding="same")(inputs))


def _model_subtract() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    return keras.Model(inputs, layers.Subtract()([inputs, layers.Conv2D(4, 3, padding="same")(inputs)]))


NEGATIVE_MODELS = [
    _model_strided,
    _model_activation,
    _model_conv_output_used_twice,
    _model_conv_output_is_model_output,
    _model_conv_reads_other_tensor,
    _model_shared_conv,
    _model_three_way_add,
    _model_broadcast_add,
    _model_subtract,
    _block(lambda: layers.Conv2D(4, 2, padding="same"), name="even kernel: no centre tap"),
    _block(lambda: layers.Conv2D(4, 3, padding="same", dilation_rate=2), name="dilated"),
    _block(lambda: layers.Conv2D(4, 1, padding="valid"), name="valid padding"),
    _block(lambda: layers.Conv2D(4, 3, padding="same", groups=2), name="grouped"),
    _block(lambda: layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2), (6, 6, 1), "multiplier 2"),
    _block(lambda: layers.Conv1D(4, 3, padding="causal"), (6, 4), "causal"),
]


def test_refuses_patterns_it_must_not_touch():
    assert_rewrite_refuses(NEGATIVE_MODELS, collapse_residual)


def test_refuses_float_nodes():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4))
    y = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, layers.Add(name="add")([inputs, y]))
    graph = read_model(model)
    for name in ("conv", "add"):
        flagged = flagged_float(graph, name)
        assert collapse_residual(flagged) is flagged
    assert len(collapse_residual(graph).nodes) == 1  # the same graph without the flag does fold
