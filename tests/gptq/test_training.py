"""The GPTQ fallback: learned rounding that fits the float model worse than rounding to nearest is dropped."""

from __future__ import annotations

import keras
import numpy as np

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig
from kerasq.gptq import GradientPTQConfig, keras_gradient_post_training_quantization
from kerasq.quantizers import QuantizeWrapper

W4_NEAREST = CoreConfig(QuantizationConfig(weights_n_bits=4, weights_compensated_rounding=False))


def _tiny_net() -> keras.Model:
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(i)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(i, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)), name="tiny")


def _kernels(model: keras.Model) -> dict[str, np.ndarray]:
    return {
        layer.layer.name: np.asarray(layer.quantized_kernels()["kernel"])
        for layer in model.layers
        if isinstance(layer, QuantizeWrapper)
    }


def test_rounding_worse_than_nearest_keeps_ptq_kernels_exactly(cifar):
    """Learning rates of 1 throw the rounding and the biases far off (hard loss many times nearest's), so the
    returned model is PTQ's with rounding to nearest, kernel for kernel and output for output."""
    model, x = _tiny_net(), cifar[0][:64]
    ptq, _ = kerasq.ptq.keras_post_training_quantization(model, x, core_config=W4_NEAREST)
    config = GradientPTQConfig(
        n_epochs=2, optimizer=keras.optimizers.Adam(1.0), optimizer_rest=keras.optimizers.Adam(1.0),
        use_hessian_based_weights=False,
    )  # fmt: skip
    gptq, info = keras_gradient_post_training_quantization(model, x, config, core_config=W4_NEAREST)
    assert info.gptq.final_loss >= 1.0, info.gptq.final_loss
    assert info.gptq.kept_ptq, f"kept_ptq False with final loss {info.gptq.final_loss:.3g} x nearest's"
    assert "PTQ's rounding kept" in info.summary()
    expected, got = _kernels(ptq), _kernels(gptq)
    assert sorted(got) == sorted(expected) and len(got) == 3
    for name, kernel in expected.items():
        np.testing.assert_array_equal(got[name], kernel, err_msg=name)
    np.testing.assert_array_equal(gptq.predict(x, verbose=0), ptq.predict(x, verbose=0))
