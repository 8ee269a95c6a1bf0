"""The sensitivity values themselves (``compute_sensitivity``): none negative, growing as bits go down, and the
layer a low-bit grid destroys ranked first."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasq.core import MixedPrecisionQuantizationConfig
from kerasq.mixed_precision.sensitivity import compute_sensitivity
from kerasq.mixed_precision.units import configurable_units
from kerasq.pipeline import prepare

OUTLIER = 30.0


def _fragile_chain() -> tuple[keras.Model, np.ndarray]:
    """x (16) -> Dense "fragile" (32, ReLU) -> Dense "plain" (32, ReLU) -> Dense "head" (4). Row 0 of the kernel
    of "fragile" is +-30 (std 0.3 elsewhere) and reads input 0, which the data scales by 0.01: those outliers
    add about as much to the output as any other row, yet they set its grid, whose 4-bit step (~4) and 2-bit
    step (~15) round every other weight to 0."""
    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((16,), name="x")
    h = keras.layers.Dense(32, activation="relu", name="fragile")(x)
    h = keras.layers.Dense(32, activation="relu", name="plain")(h)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(h))
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.3, (16, 32))
    kernel[0] = OUTLIER * np.sign(rng.normal(size=32))
    model.get_layer("fragile").set_weights([kernel.astype("float32"), np.zeros(32, "float32")])
    data = rng.normal(size=(64, 16)).astype("float32")
    data[:, 0] *= 0.01
    return model, data


@pytest.fixture(scope="module")
def measured():
    model, data = _fragile_chain()
    prepared = prepare(model, data, None, None)
    units = configurable_units(prepared.graph, prepared.plan)
    sens = compute_sensitivity(
        prepared.graph, prepared.plan, units, prepared.grids, prepared.data.take(32),
        MixedPrecisionQuantizationConfig(), prepared.input_means,
    )  # fmt: skip
    return units, sens


def test_values_grow_as_bits_go_down(measured):
    units, sens = measured
    assert {u.kind for u in units} == {"weights", "activation"} and len(units) >= 6
    for unit, values in zip(units, sens.values, strict=True):
        assert unit.candidates == tuple(sorted(unit.candidates, reverse=True))  # index 0: the highest bits
        assert len(values) == len(unit.candidates)
        assert values[0] == 0, unit.label  # the reference itself
        assert np.all(values >= 0), (unit.label, values)
        assert np.all(np.diff(values) >= 0), (unit.label, values)
        assert values[-1] > 1e-3, (unit.label, values)


def test_the_layer_its_grid_destroys_ranks_first(measured):
    units, sens = measured
    lowest = {u.label: float(v[-1]) for u, v in zip(units, sens.values, strict=True)}
    fragile = lowest.pop("fragile (weights)")
    assert fragile > 0.5, fragile  # most of the output lost (measured 0.74)
    assert fragile > 2 * max(lowest.values()), (fragile, lowest)  # next measured 0.19 (the 2-bit input)
