"""One layer = one weights unit: a layer applied twice (shared Dense / Conv, a nested model called twice) has one
kernel, one bit width, one entry in the unit list, and counts once in weights memory (BOPs count every call)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.core import BitWidthConfig, CoreConfig, MixedPrecisionQuantizationConfig, QuantizationConfig
from kerasq.mixed_precision.units import configurable_units
from kerasq.pipeline import plan_model
from kerasq.quantizers import QuantizeWrapper

L = keras.layers
RNG = np.random.default_rng(0)
DATA = RNG.normal(size=(64, 16)).astype("float32")


def _shared_dense() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="x")
    shared = L.Dense(16, name="shared")
    h = shared(L.Dense(16, activation="relu", name="pre")(x))
    y = shared(L.ReLU(name="mid")(h))
    return keras.Model(x, L.Dense(4, name="head")(y))


def _nested_twice() -> keras.Model:
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((16,))
    block = keras.Model(inner_in, L.Dense(16, activation="relu", name="inner")(inner_in), name="block")
    x = keras.Input((16,), name="x")
    return keras.Model(x, L.Dense(4, name="head")(block(block(x))))


def _shared_conv() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 4), name="x")
    conv = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    return keras.Model(x, L.Conv2D(2, 1, name="head")(conv(conv(x))))


def _weights_units(model: keras.Model) -> list:
    graph, plan = plan_model(model, None, None, None)
    return [u for u in configurable_units(graph, plan) if u.kind == "weights"]


@pytest.mark.parametrize(
    ("make", "calls"),
    [(_shared_dense, ("shared", "shared_call1")), (_shared_conv, ("conv", "conv_call1"))],
    ids=["dense", "conv"],
)
def test_one_unit_per_layer(make, calls):
    units = _weights_units(make())
    holding = [u for u in units if set(calls) & set(u.nodes)]
    assert len(holding) == 1 and holding[0].nodes == calls


def test_nested_model_called_twice_is_one_unit():
    units = _weights_units(_nested_twice())
    assert [len(u.nodes) for u in units] == [2, 1]  # the nested Dense (two calls), the head


@pytest.mark.parametrize(
    ("make", "kernels", "macs"),
    [
        (_shared_dense, 256 + 256 + 64, 256 + 256 + 256 + 64),  # pre, shared (twice), head
        (_nested_twice, 256 + 64, 256 + 256 + 64),
        (_shared_conv, 144 + 8, (144 + 144 + 8) * 36),
    ],
    ids=["dense", "nested", "conv"],
)
def test_weights_memory_counts_once_bops_count_every_call(make, kernels, macs):
    ru = kerasq.core.keras_resource_utilization_data(make())
    assert ru.weights_memory == kernels
    assert ru.bops == macs * 8 * 8


def _quantized_at(model: keras.Model, unit_bits: dict[str, int]) -> tuple[keras.Model, object]:
    units = _weights_units(model)
    graph, plan = plan_model(model, None, None, None)
    overwrite = []
    for unit in configurable_units(graph, plan):
        bits = unit_bits.get(unit.name, unit.candidates[0]) if unit.kind == "weights" else unit.candidates[0]
        overwrite.append(unit.candidates.index(bits))
    assert {u.name for u in units} >= set(unit_bits)
    core = CoreConfig(
        mixed_precision_config=MixedPrecisionQuantizationConfig(configuration_overwrite=overwrite)
    )
    return kerasq.ptq.keras_post_training_quantization(model, DATA, None, core)


def _levels(wrapper: QuantizeWrapper) -> tuple[int, np.ndarray, int, int]:
    spec = wrapper.kernel_quantizers["kernel"]
    scale, zero_point = wrapper.kernel_grid("kernel")
    levels = np.asarray(wrapper.quantized_kernels()["kernel"]) / scale + zero_point
    return spec.n_bits, levels, spec.qmin, spec.qmax


@pytest.mark.parametrize("bits", [2, 4])
def test_shared_layer_kernel_lives_on_its_chosen_grid(bits):
    """Mixed precision gives the shared Dense ``bits``: its kernel has at most 2^bits integer levels inside the
    bits-wide range (before the fix: an 8-bit range on the low-bit scale, dozens of levels)."""
    q_model, info = _quantized_at(_shared_dense(), {"shared": bits})
    wrapper = next(
        layer for layer in q_model.layers if isinstance(layer, QuantizeWrapper) and "shared" in layer.name
    )
    n_bits, levels, qmin, qmax = _levels(wrapper)
    assert n_bits == bits and qmax - qmin + 1 <= 2**bits
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert np.round(levels).min() >= qmin and np.round(levels).max() <= qmax
    assert 2 < len(np.unique(np.round(levels))) <= 2**bits
    # the scale is the layer's reported grid at ``bits``, which spans the kernel (an 8-bit scale on a 2-bit
    # range would cover 1/127 of it)
    scale = wrapper.kernel_grid("kernel")[0].reshape(-1)
    np.testing.assert_allclose(scale, info.layers["shared"].weights["kernel"].scale, rtol=1e-6)
    kernel = np.asarray(wrapper.layer.kernel)
    assert np.all(scale * qmax >= 0.3 * np.abs(kernel).max(axis=0))
    assert info.mixed_precision.units.count("shared (weights)") == 1
    assert "shared_call1 (weights)" not in info.mixed_precision.units
    assert info.resource_utilization.weights_memory == 256 + 256 * bits / 8 + 64
    assert info.weights_memory_bytes == info.resource_utilization.weights_memory
    assert (
        info.layers["shared_call1"].weights_of == "shared" and info.layers["shared_call1"].kernel_bytes == 0
    )


def test_manual_width_on_a_shared_layer_pins_every_call():
    """A BitWidthConfig rule naming the layer pins the kernel of both calls (one kernel: one width)."""
    pinned = BitWidthConfig().set_manual_weights_bit_width(4, name="shared")
    core = CoreConfig(QuantizationConfig(), bit_width_config=pinned)
    q_model, info = kerasq.ptq.keras_post_training_quantization(_shared_dense(), DATA, None, core)
    assert info.layers["shared"].weights["kernel"].n_bits == 4
    assert info.layers["shared_call1"].weights["kernel"].n_bits == 4
    assert info.resource_utilization.weights_memory == 256 + 128 + 64
