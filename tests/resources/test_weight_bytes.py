"""What ``weights_memory`` counts (MCT 2.6.1's definition: quantized kernels at their bits, nothing else) and
what ``QuantizationInfo.stored_weights_bytes`` adds (int32 biases, zero biases bias correction adds, weights
left float)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kerasq
from kerasq.core import BitWidthConfig, CoreConfig, QuantizationConfig

L = keras.layers
RNG = np.random.default_rng(0)


def _cnn(channels: tuple[int, int, int], use_bias: bool) -> tuple[keras.Model, int, int]:
    """conv -> depthwise -> dense; returns (model, kernel params, bias count)."""
    c1, c2, units = channels
    x = keras.Input((6, 6, 3), name="x")
    y = L.Conv2D(c1, 3, padding="same", use_bias=use_bias, activation="relu", name="conv")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=use_bias, name="dw")(y)
    y = L.Conv2D(c2, 1, use_bias=use_bias, name="pw")(y)
    y = L.Dense(units, use_bias=use_bias, name="dense")(L.GlobalAveragePooling2D(name="gap")(y))
    model = keras.Model(x, y)
    kernels = 27 * c1 + 9 * c1 + c1 * c2 + c2 * units
    return model, kernels, (c1 + c1 + c2 + units) if use_bias else 0


def _weights_memory(model: keras.Model, core: CoreConfig | None = None) -> float:
    return kerasq.core.keras_resource_utilization_data(model, core_config=core).weights_memory


@settings(max_examples=12, deadline=None)
@given(
    channels=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)),
    bits=st.sampled_from([8, 4, 2]),
)
def test_weights_memory_is_kernel_params_times_bits(channels, bits):
    """N kernel params at b bits are N * b / 8 bytes, with or without biases (odd N at 4 bits: N / 2 too)."""
    core = CoreConfig(QuantizationConfig(weights_n_bits=bits))
    for use_bias in (True, False):
        model, kernels, _ = _cnn(channels, use_bias)
        assert _weights_memory(model, core) == kernels * bits / 8


def test_fixed_width_kernels_count_at_their_width():
    """A kernel pinned at 8 bits counts at 8 while the others count at 4 (MCT counts non-configurable kernels)."""
    model, kernels, _ = _cnn((4, 5, 3), use_bias=True)
    pinned = BitWidthConfig().set_manual_weights_bit_width(8, name="dense")
    core = CoreConfig(QuantizationConfig(weights_n_bits=4), bit_width_config=pinned)
    dense = 5 * 3
    assert _weights_memory(model, core) == (kernels - dense) / 2 + dense


def test_float_layer_weights_do_not_count():
    """An Embedding (kept float) adds its table to the stored bytes, not to weights_memory."""
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    y = L.Flatten(name="flat")(L.Embedding(10, 3, name="embed")(tokens))
    model = keras.Model(tokens, L.Dense(2, name="dense")(y))
    data = RNG.integers(0, 10, size=(32, 4)).astype("int32")
    _, info = kerasq.ptq.keras_post_training_quantization(model, data)
    assert "embed" in info.float_layers
    assert info.weights_memory_bytes == info.resource_utilization.weights_memory == 12 * 2
    assert info.stored_weights_bytes == 12 * 2 + 2 * 4 + 10 * 3 * 4  # kernel + int32 bias + float table


@pytest.mark.parametrize("use_bias", [True, False])
def test_stored_bytes_add_four_per_bias(use_bias):
    """Stored bytes: the packed kernels plus 4 bytes per bias; without biases, bias correction adds zero biases
    (one per output channel of the conv, depthwise and dense layers), and they are stored too."""
    model, kernels, _ = _cnn((4, 5, 3), use_bias)
    channels = 4 + 4 + 5 + 3
    data = RNG.uniform(size=(16, 6, 6, 3)).astype("float32")
    _, info = kerasq.ptq.keras_post_training_quantization(model, data)
    assert info.weights_memory_bytes == info.resource_utilization.weights_memory == kernels
    assert info.stored_weights_bytes == kernels + 4 * channels
    off = CoreConfig(QuantizationConfig(weights_bias_correction=False))
    _, plain = kerasq.ptq.keras_post_training_quantization(model, data, core_config=off)
    assert plain.stored_weights_bytes == kernels + (4 * channels if use_bias else 0)
    assert sum(layer.stored_bytes for layer in plain.layers.values()) == plain.stored_weights_bytes
    assert sum(layer.kernel_bytes for layer in plain.layers.values()) == kernels


def test_stored_bytes_pack_sub_byte_kernels_per_kernel():
    """At 4 bits a kernel of odd size takes whole bytes on the device (ceil), weights_memory keeps the half."""
    x = keras.Input((3,), name="x")
    model = keras.Model(x, L.Dense(3, use_bias=False, name="dense")(x))  # 9 params
    core = CoreConfig(QuantizationConfig(weights_n_bits=4, weights_bias_correction=False))
    _, info = kerasq.ptq.keras_post_training_quantization(model, RNG.normal(size=(16, 3)), core_config=core)
    assert info.weights_memory_bytes == 4.5
    assert info.stored_weights_bytes == 5
