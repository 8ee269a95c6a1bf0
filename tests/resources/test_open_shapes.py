"""Dimensions a model leaves open (``Input((None, None, 3))``) are sized by the calibration data, never by 1;
without data the figures are refused with an error naming the input."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kerasq
from kerasq.errors import ConfigError

L = keras.layers


def _fcn(shape: tuple) -> keras.Model:
    """Fully convolutional: strided conv, folded BN, transposed conv back up, 1x1 head."""
    keras.utils.set_random_seed(0)
    x = keras.Input(shape, name="image")
    y = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
    y = L.Conv2D(8, 3, strides=2, padding="same", name="c2")(y)
    y = L.ReLU(name="r2")(L.BatchNormalization(name="bn")(y))
    y = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="up")(y)
    return keras.Model(x, L.Conv2D(2, 1, name="head")(y))


def _images(h: int, w: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(8, h, w, 3)).astype("float32")


@settings(max_examples=6, deadline=None)
@given(h=st.integers(2, 20).map(lambda v: 2 * v), w=st.integers(2, 20).map(lambda v: 2 * v))
def test_open_dims_take_the_calibration_shape(h, w):
    open_ru = kerasq.core.keras_resource_utilization_data(_fcn((None, None, 3)), _images(h, w))
    fixed_ru = kerasq.core.keras_resource_utilization_data(_fcn((h, w, 3)), _images(h, w))
    assert open_ru == fixed_ru
    # MACs by hand: c1 216 params at h*w outputs, c2 (BN folded) 576 at h*w/4, the transposed conv 288 at its
    # h*w/4 inputs, the head 8 at h*w; every weight and input at 8 bits
    assert open_ru.bops == (216 + 576 / 4 + 288 / 4 + 8) * h * w * 8 * 8
    assert open_ru.weights_memory == 216 + 576 + 288 + 8


def test_ptq_reports_the_calibration_sized_figures_and_keeps_the_model_open():
    """A 32x32 calibration: the same activation memory and BOPs as the model built with Input((32, 32, 3))
    (16 KB-scale activations, not 16 B); the quantized model still accepts any size."""
    data = _images(32, 32)
    q_open, open_info = kerasq.ptq.keras_post_training_quantization(_fcn((None, None, 3)), data)
    _, fixed_info = kerasq.ptq.keras_post_training_quantization(_fcn((32, 32, 3)), data)
    ru = open_info.resource_utilization
    assert ru.activation_memory == fixed_info.resource_utilization.activation_memory
    assert ru.bops == fixed_info.resource_utilization.bops
    # input 3 KB + c1 output 8 KB alive while c1 runs (c1 and its ReLU fuse): the peak is at least that
    assert ru.activation_memory >= 32 * 32 * 3 + 32 * 32 * 8
    assert q_open.input_shape == (None, None, None, 3)
    assert q_open.predict(_images(16, 24), verbose=0).shape == (8, 16, 24, 2)


def test_open_dims_without_data_are_refused():
    with pytest.raises(
        ConfigError, match=r"'image' has per-sample shape \(None, None, 3\).*representative_data_gen"
    ):
        kerasq.core.keras_resource_utilization_data(_fcn((None, None, 3)))
