"""Bias correction: the closed form per kind, and a lower output mean error at 4-bit weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig
from kerasq.corrections import bias_shift
from kerasq.graph import read_model


def _layer_node(layer: keras.layers.Layer, shape: tuple[int, ...]):
    inputs = keras.Input(shape)
    return read_model(keras.Model(inputs, layer(inputs))).nodes[0]


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["conv", "depthwise", "dense"]), k=st.integers(1, 3), groups=st.sampled_from([1, 2]),
    strides=st.sampled_from([1, 2]), padding=st.sampled_from(["same", "valid"]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_shift_equals_the_mean_output_change_on_data(kind, k, groups, strides, padding, seed):
    """The shift is E[layer(x; W + E)] - E[layer(x; W)] over real inputs, padded borders and groups included."""
    rng = np.random.default_rng(seed)
    if kind == "conv":
        layer, shape = keras.layers.Conv2D(4, k, strides=strides, padding=padding, groups=groups), (6, 6, 4)
    elif kind == "depthwise":
        layer = keras.layers.DepthwiseConv2D(k, strides=strides, padding=padding, depth_multiplier=groups)
        shape = (6, 6, 3)
    else:
        layer, shape = keras.layers.Dense(5), (7,)
    node = _layer_node(layer, shape)
    x = rng.normal(loc=1.0, size=(64, *shape)).astype("float32")  # non-zero mean, varying per position
    error = rng.normal(scale=0.1, size=layer.kernel.shape).astype("float32")
    probe = type(layer).from_config({**layer.get_config(), "use_bias": False, "name": None})
    probe.build((None, *shape))
    probe.set_weights([error])
    y = np.asarray(probe(x))
    expected = y.reshape(-1, y.shape[-1]).mean(axis=0)
    np.testing.assert_allclose(bias_shift(node, error, x.mean(axis=0)), expected, rtol=1e-4, atol=1e-5)


def _model() -> keras.Model:
    keras.utils.set_random_seed(3)
    layers = keras.layers
    x = inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x))


def test_lowers_the_output_mean_error_at_4_bit_weights():
    model = _model()
    x = np.random.default_rng(0).uniform(0, 1, size=(256, 16, 16, 3)).astype("float32")
    f = model.predict(x, verbose=0)
    errors = {}
    for correct in (
        False,
        True,
    ):  # nearest rounding: compensated rounding removes most of the mean shift itself
        qc = QuantizationConfig(
            weights_n_bits=4, activation_n_bits=16, weights_bias_correction=correct,
            weights_compensated_rounding=False,
        )  # fmt: skip
        q, info = kerasq.ptq.keras_post_training_quantization(model, x, core_config=CoreConfig(qc))
        errors[correct] = np.abs((q.predict(x, verbose=0) - f).mean(axis=0)).mean()
    assert errors[True] < 0.3 * errors[False]
    # the quantized kernels are unchanged; only biases move
    assert info.layers["c1"].weights["kernel"].n_bits == 4


def test_float_model_untouched_and_bias_added_where_missing(trained_cnn, calibration):
    before = [w.copy() for w in trained_cnn.get_weights()]
    q, info = kerasq.ptq.keras_post_training_quantization(trained_cnn, calibration)
    for a, b in zip(before, trained_cnn.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    conv1 = [layer for layer in q.layers if getattr(layer, "name", "") == "quant_conv1"][0]
    assert conv1.layer.use_bias  # conv1 had use_bias=False (BN folded adds one anyway)


def test_flag_is_validated():
    with pytest.raises(ValueError, match="weights_bias_correction must be True or False"):
        QuantizationConfig(weights_bias_correction="yes")
