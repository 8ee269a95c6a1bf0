"""collapse_linear: conv -> 1x1 conv and dense -> dense pairs merge without changing the float function."""

from __future__ import annotations

import keras
from helpers import (
    assert_model_untouched,
    assert_rewrite_refuses,
    assert_same_function,
    flagged_float,
    randomize_biases,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from keras import layers

from kerasq.graph import read_model
from kerasq.graph.rewrites.linear_collapse import collapse_linear


def _conv_pair(k, strides, dilation, padding, cin, cmid, cout, bias1, bias2, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((11, 11, cin))
    x = layers.Conv2D(cmid, k, strides=strides, dilation_rate=dilation, padding=padding, use_bias=bias1,
                      name="first")(inputs)  # fmt: skip
    x = layers.Conv2D(cout, 1, use_bias=bias2, name="second")(x)
    model = keras.Model(inputs, layers.Flatten(name="flat")(x))
    randomize_biases(model, seed)
    return model


@settings(max_examples=25, deadline=None)
@given(
    k=st.sampled_from([1, 3, 5]),
    stride_or_dilation=st.sampled_from([(1, 1), (2, 1), (1, 2)]),
    padding=st.sampled_from(["same", "valid"]),
    cin=st.integers(1, 6),
    cmid=st.integers(1, 6),
    cout=st.integers(1, 6),
    bias1=st.booleans(),
    bias2=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_then_pointwise_collapses(k, stride_or_dilation, padding, cin, cmid, cout, bias1, bias2, seed):
    strides, dilation = stride_or_dilation
    assume(k * k * cin * cout <= k * k * cin * cmid + cmid * cout)  # merges that would grow are refused
    model = _conv_pair(k, strides, dilation, padding, cin, cmid, cout, bias1, bias2, seed)
    graph = read_model(model)
    new = collapse_linear(graph)
    assert len(new.nodes) == len(graph.nodes) - 1
    merged = new.node("first")
    assert merged.config["filters"] == cout and merged.config["use_bias"]
    assert merged.weights[0].shape == (k, k, cin, cout)
    assert merged.outputs == graph.node("second").outputs
    assert_same_function(model, new, seed)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=3, max_size=5),
    biases=st.lists(st.booleans(), min_size=4, max_size=4),
    rank3=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dense_chain_collapses_fully(sizes, biases, rank3, seed):
    fan_in, grows = sizes[0], False
    for mid, out in zip(
        sizes[1:], sizes[2:], strict=False
    ):  # merged fan_in x out vs fan_in x mid + mid x out
        grows |= fan_in * out > fan_in * mid + mid * out
    assume(not grows)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4, sizes[0]) if rank3 else (sizes[0],))
    x = inputs
    for i, units in enumerate(sizes[1:]):
        x = layers.Dense(units, use_bias=biases[i], name=f"dense{i}")(x)
    model = keras.Model(inputs, x)
    randomize_biases(model, seed)
    graph = read_model(model)
    new = collapse_linear(graph)
    assert [n.name for n in new.nodes] == ["dense0"]
    assert new.nodes[0].config["units"] == sizes[-1]
    assert_same_function(model, new, seed)


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(2, 3), seed=st.integers(0, 2**16))
def test_conv_chain_collapses_fully(depth, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((7, 7, 3))
    x = layers.Conv2D(4, 3, padding="same", name="head")(inputs)
    for i in range(depth):
        x = layers.Conv2D(3 - i, 1, name=f"pw{i}")(x)  # narrowing: every merge shrinks the model
    model = keras.Model(inputs, layers.ReLU(name="relu")(x))
    randomize_biases(model, seed)
    graph = read_model(model)
    new = collapse_linear(graph)
    assert [n.name for n in new.nodes] == ["head", "relu"]
    assert_same_function(model, new, seed)


def test_conv1d_pair_collapses():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((9, 3))
    x = layers.Conv1D(5, 3, padding="causal", name="first")(inputs)
    model = keras.Model(inputs, layers.Conv1D(2, 1, name="second")(x))
    randomize_biases(model, 1)
    new = collapse_linear(read_model(model))
    assert [n.name for n in new.nodes] == ["first"]
    assert_same_function(model, new)


def test_users_layers_are_untouched():
    assert_model_untouched(_conv_pair(3, 1, 1, "same", 3, 4, 2, True, True, seed=0), collapse_linear)


# ---------------------------------------------------------------- negative cases: nothing may change


def _model_activation_between() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, layers.Conv2D(2, 1)(x))


def _model_relu_layer_between() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = layers.ReLU()(layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, layers.Conv2D(2, 1)(x))


def _model_second_has_activation() -> keras.Model:
    inputs = keras.Input((6,))
    return keras.Model(inputs, layers.Dense(2, activation="tanh")(layers.Dense(4)(inputs)))


def _model_intermediate_used_twice() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    mid = layers.Conv2D(4, 3, padding="same")(inputs)
    return keras.Model(inputs, layers.Add()([layers.Conv2D(4, 1)(mid), mid]))


def _model_intermediate_is_output() -> keras.Model:
    inputs = keras.Input((6,))
    mid = layers.Dense(4)(inputs)
    return keras.Model(inputs, [layers.Dense(3)(mid), mid])


def _model_shared_pointwise() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    shared = layers.Conv2D(3, 1, name="shared")
    return keras.Model(inputs, shared(layers.Conv2D(3, 3, padding="same")(shared(inputs))))


def _model_shared_first() -> keras.Model:
    inputs = keras.Input((5,))
    shared = layers.Dense(5, name="shared")
    return keras.Model(inputs, layers.Dense(2)(shared(shared(inputs))))


def _model_second_is_3x3() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 1)(inputs)
    return keras.Model(inputs, layers.Conv2D(2, 3, padding="same")(x))


def _model_second_strided() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3)(inputs)
    return keras.Model(inputs, layers.Conv2D(2, 1, strides=2)(x))


def _model_grouped_first() -> keras.Model:
    inputs = keras.Input((6, 6, 4))
    x = layers.Conv2D(4, 3, groups=2)(inputs)
    return keras.Model(inputs, layers.Conv2D(2, 1)(x))


def _model_conv_then_depthwise() -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3)(inputs)
    return keras.Model(inputs, layers.DepthwiseConv2D(1)(x))


NEGATIVE_MODELS = [
    _model_activation_between,
    _model_relu_layer_between,
    _model_second_has_activation,
    _model_intermediate_used_twice,
    _model_intermediate_is_output,
    _model_shared_pointwise,
    _model_shared_first,
    _model_second_is_3x3,
    _model_second_strided,
    _model_grouped_first,
    _model_conv_then_depthwise,
]


def test_refuses_patterns_it_must_not_touch():
    assert_rewrite_refuses(NEGATIVE_MODELS, collapse_linear)


def test_refuses_float_nodes():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers.Dense(2, name="b")(layers.Dense(4, name="a")(inputs)))
    graph = read_model(model)
    for name in ("a", "b"):
        flagged = flagged_float(graph, name)
        assert collapse_linear(flagged) is flagged
    assert len(collapse_linear(graph).nodes) == 1  # the same graph without the flag does collapse


def test_refuses_a_merge_that_grows_the_model():
    """A bottleneck (32 -> 4 -> 32) merged would hold 32x32 weights instead of 2x32x4: left alone."""
    inputs = keras.Input((5, 5, 32))
    x = layers.Conv2D(4, 1, name="squeeze")(inputs)
    model = keras.Model(inputs, layers.Conv2D(32, 1, name="expand")(x))
    graph = read_model(model)
    assert collapse_linear(graph) is graph
    inputs = keras.Input((5, 5, 4))
    x = layers.Conv2D(32, 1, name="expand")(inputs)
    model = keras.Model(inputs, layers.Conv2D(4, 1, name="squeeze")(x))
    assert len(collapse_linear(read_model(model)).nodes) == 1  # 4 -> 32 -> 4 merges into 4 -> 4
