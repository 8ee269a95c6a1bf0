"""Both built-in platforms' kernel grids: int8 weights never use -128, so only 8-bit kernels drop their most
negative level; 4- and 2-bit kernels keep all 16 / 4 levels (as MCT's grids do)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

import kerasq


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(image)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    return keras.Model(image, layers.Dense(4, name="head")(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("platform", ["imx500", "tflite"])
@pytest.mark.parametrize(("bits", "qmin", "qmax"), [(2, -2, 1), (4, -8, 7), (8, -127, 127)])
def test_kernels_use_every_level_an_int8_weight_can_hold(platform, bits, qmin, qmax):
    calibration = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(np.float32)
    core = kerasq.core.CoreConfig(kerasq.core.QuantizationConfig(weights_n_bits=bits))
    q_model = kerasq.ptq.keras_post_training_quantization(
        _model(), calibration, core_config=core,
        target_platform_capabilities=kerasq.get_target_platform_capabilities(platform),
    )[0]  # fmt: skip
    wrappers = {w.layer.name: w for w in q_model.layers if isinstance(w, kerasq.QuantizeWrapper)}
    assert set(wrappers) == {"conv", "dw", "head"}
    for name, w in wrappers.items():
        spec = w.kernel_quantizers["kernel"]
        assert (spec.qmin, spec.qmax) == (qmin, qmax), name
        scale, _ = w.kernel_grid("kernel")
        levels = np.round(np.asarray(w.quantized_kernels()["kernel"]) / scale)
        assert levels.min() >= qmin and levels.max() <= qmax, name
        if bits == 2:  # all four levels are used (three, [-1, 1], before)
            np.testing.assert_array_equal(np.unique(levels), [-2, -1, 0, 1], err_msg=name)
