"""Degenerate calibration data is reported: in ``info.warnings`` and in the log."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.core import CoreConfig, MixedPrecisionQuantizationConfig, ResourceUtilization
from kerasq.data import InputSpec, RepresentativeData

TWO = [InputSpec("img", (4, 4, 3), "float32"), InputSpec("mask", (2,), "float32")]
X = np.random.default_rng(0).uniform(0, 1, (40, 4, 4, 3)).astype("float32")


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 3), name="img")
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    return keras.Model(image, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))


def test_constant_and_identical_inputs_are_named():
    same = np.repeat(X[:1], 40, axis=0)
    data = RepresentativeData([same, np.full((40, 2), 3.0, "float32")], TWO, batch_size=16)
    data.num_samples()
    identical, constant = data.warnings
    assert "all 40 samples of input 'img' are identical" in identical
    assert "input 'mask' is constant (every value is 3 in all 40 samples)" in constant


def test_varied_data_gets_no_warning():
    data = RepresentativeData([X, X[:, 0, 0, :2]], TWO, batch_size=16)
    assert data.num_samples() == 40 and data.warnings == []


def test_all_zero_calibration_is_reported_by_ptq(caplog):
    _, info = kerasq.ptq.keras_post_training_quantization(_model(), np.zeros_like(X))
    assert info.inputs["img"].range_max[0] < 1e-4  # the grid is what the data allows, but now it is said
    data_warning, tensor_warning = info.warnings
    assert "input 'img' is constant (all zeros in all 40 samples)" in data_warning
    assert tensor_warning.startswith(
        "2 quantized tensor(s) never varied over the representative data: the outputs of 'conv_activation' "
        "(always 0), 'head' (always 0). Their grids span that one value, narrower than any other data"
    )
    assert data_warning in caplog.text and tensor_warning in caplog.text


def test_real_calibration_gets_no_data_warning():
    _, info = kerasq.ptq.keras_post_training_quantization(_model(), X)
    assert info.warnings == []


def test_fewer_samples_than_num_of_images_is_reported():
    mp = MixedPrecisionQuantizationConfig(num_of_images=32)
    _, info = kerasq.ptq.keras_post_training_quantization(
        _model(),
        X[:12],
        ResourceUtilization(weights_memory=1e9),
        core_config=CoreConfig(mixed_precision_config=mp),
    )
    assert any(
        w.startswith(
            "MixedPrecisionQuantizationConfig.num_of_images=32 asks for 32 representative samples for "
            "mixed-precision sensitivity, but the data has only 12"
        )  # fmt: skip
        for w in info.warnings
    )


@pytest.mark.parametrize("n", [32, 40])
def test_enough_samples_for_num_of_images_is_quiet(n):
    data = RepresentativeData(X[:n], TWO[:1])
    data.warn_if_fewer(32, "MixedPrecisionQuantizationConfig.num_of_images", "mixed-precision sensitivity")
    assert data.warnings == []
