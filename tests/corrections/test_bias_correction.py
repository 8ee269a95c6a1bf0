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


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 2]), st.integers(0, 2**16))
def test_shift_equals_mean_output_change_of_a_conv(k, cin_per_group, groups, seed):
    """delta = E[conv(x, W_q)] - E[conv(x, W)] for inputs whose channels are constant (no border effect)."""
    rng = np.random.default_rng(seed)
    cin, cout = cin_per_group * groups, 2 * groups
    error = rng.normal(size=(k, k, cin_per_group, cout))
    mu = rng.normal(size=cin)
    x = np.broadcast_to(mu, (1, 6, 6, cin)).astype("float32")
    conv = keras.layers.Conv2D(cout, k, groups=groups, use_bias=False)
    conv.build(x.shape)
    conv.set_weights([error.astype("float32")])
    expected = np.asarray(conv(x)).reshape(-1, cout).mean(axis=0)
    np.testing.assert_allclose(bias_shift("conv", error, mu, groups), expected, rtol=1e-4, atol=1e-4)


def test_shift_of_depthwise_and_dense():
    rng = np.random.default_rng(0)
    error, mu = rng.normal(size=(3, 3, 4, 2)), rng.normal(size=4)
    expected = (error.sum(axis=(0, 1)) * mu[:, None]).reshape(-1)
    np.testing.assert_allclose(bias_shift("depthwise_conv", error, mu), expected)
    error = rng.normal(size=(5, 3))
    mu = rng.normal(size=5)
    np.testing.assert_allclose(bias_shift("dense", error, mu), mu @ error)


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
    for correct in (False, True):
        qc = QuantizationConfig(weights_n_bits=4, activation_n_bits=16, weights_bias_correction=correct)
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
