"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig


@pytest.fixture(scope="module")
def tiny_model():
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _ptq(model, data, **kwargs):
    return kerasq.ptq.keras_post_training_quantization(model, data, **kwargs)


def test_subclassed_model(tiny_model):
    class Net(keras.Model):
        def call(self, x):
            return x * 2

    net = Net()
    net(np.zeros((1, 2), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        _ptq(net, np.zeros((4, 2), "float32"))


def test_empty_dataset(tiny_model):
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 3), "float32")).batch(4)
    with pytest.raises(ValueError, match="no samples"):
        _ptq(tiny_model, empty)


def test_wrong_input_shape(tiny_model):
    with pytest.raises(ValueError, match="pixels"):
        _ptq(tiny_model, np.zeros((4, 9, 9, 3), "float32"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_data(tiny_model, bad):
    data = np.ones((8, 8, 8, 3), "float32")
    data[3, 1, 1, 0] = bad
    with pytest.raises(ValueError, match="NaN/Inf"):
        _ptq(tiny_model, data)


def test_unknown_tpc_name():
    with pytest.raises(ValueError, match="Unknown target platform 'imx9000'.*imx500, tflite"):
        kerasq.get_target_platform_capabilities("imx9000")


def test_tpc_argument_type(tiny_model):
    with pytest.raises(ValueError, match="target_platform_capabilities"):
        _ptq(tiny_model, np.zeros((4, 8, 8, 3), "float32"), target_platform_capabilities="imx500")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"l_p_value": 0}, "l_p_value"),
        ({"l_p_value": float("nan")}, "l_p_value"),
        ({"activation_error_method": "median"}, "activation_error_method"),
        ({"weights_n_bits": 1}, "weights_n_bits"),
        ({"activation_n_bits": 17}, "activation_n_bits"),
        ({"num_histogram_bins": 10}, "num_histogram_bins"),
    ],
)
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizationConfig(**kwargs)


def test_core_config_needs_quantization_config():
    with pytest.raises(ValueError, match="quantization_config"):
        CoreConfig(quantization_config={"l_p_value": 2})


def test_error_method_accepts_names():
    assert QuantizationConfig(weights_error_method="kl").weights_error_method.name == "KL"


def test_resource_budget_is_refused_clearly(tiny_model):
    with pytest.raises(ValueError, match="target_resource_utilization"):
        _ptq(tiny_model, np.zeros((4, 8, 8, 3), "float32"), target_resource_utilization=object())
