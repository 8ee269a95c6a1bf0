"""The collapsing and ReLU-bound knobs on models where they matter: fewer quantizers, lower output error."""

from __future__ import annotations

import keras
import numpy as np

import kerasq
from kerasq.core import BitWidthConfig, CoreConfig, QuantizationConfig

L = keras.layers


def _run(model, x, test, tpc="imx500", pins=None, **knobs):
    qc = QuantizationConfig(**knobs)
    core = CoreConfig(qc, bit_width_config=pins or BitWidthConfig())
    tpc = kerasq.get_target_platform_capabilities(tpc)
    q, info = kerasq.ptq.keras_post_training_quantization(
        model, x, core_config=core, target_platform_capabilities=tpc
    )
    f = model.predict(test, verbose=0)
    error = float(np.mean((q.predict(test, verbose=0) - f) ** 2) / np.mean(f**2))
    quantizers = sum(isinstance(layer, kerasq.ActivationQuantizer) for layer in q.layers)
    return error, quantizers


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(256, *shape)).astype("float32"), rng.uniform(
        -1, 1, size=(128, *shape)
    ).astype("float32")


def test_linear_collapsing_removes_a_quantizer_and_its_error():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = L.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(L.ReLU()(x))))
    x, test = _data((8, 8, 3))
    on = _run(model, x, test, activation_n_bits=6)
    off = _run(model, x, test, activation_n_bits=6, linear_collapsing=False)
    assert on[1] == off[1] - 1  # the c1 -> c2 intermediate is no longer quantized
    assert on[0] < 0.9 * off[0]


def test_residual_collapsing_removes_an_add_and_a_quantizer_on_tflite():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    y = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.ReLU()(L.Add(name="add")([inputs, y]))
    model = keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(x)))
    x, test = _data((8, 8, 4))
    on = _run(model, x, test, tpc="tflite", activation_n_bits=8)
    off = _run(model, x, test, tpc="tflite", activation_n_bits=8, residual_collapsing=False)
    assert on[1] == off[1] - 1  # conv output and add output were two grids; now the conv writes the sum
    # the identity widens the kernel's range, so its 8-bit grid is coarser: a measured trade (1.16x here)
    assert on[0] < 1.5 * off[0]


def test_relu_bound_to_power_of_2_uses_the_whole_grid():
    """ReLU6 under a power-of-two grid covers [0, 8) with values only in [0, 6]; rescaled to [0, 8] it uses all."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    x = L.ReLU(max_value=6.0, name="r6")(L.Dense(32, name="d1")(inputs))
    model = keras.Model(inputs, L.Dense(4, name="d2")(x))
    kernel, bias = model.get_layer("d1").get_weights()
    model.get_layer("d1").set_weights([kernel * 4.0, bias])  # values over the whole [0, 6]
    x, test = _data((16,))
    pins = BitWidthConfig().set_manual_activation_bit_width(4, name="r6")
    on = _run(
        model, x, test, pins=pins, activation_n_bits=16, weights_n_bits=16, relu_bound_to_power_of_2=True
    )
    off = _run(model, x, test, pins=pins, activation_n_bits=16, weights_n_bits=16)
    assert on[0] < 0.75 * off[0]  # (6/8)^2 = 0.56 of the rounding error in theory
