"""``KernelGrid``: the typed description a ``QuantizeWrapper`` keeps of each kernel's grid, and its config."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasq.config import QuantizationMethod
from kerasq.errors import ConfigError
from kerasq.quantizers import QuantizeWrapper
from kerasq.quantizers.grid import KernelGrid, QuantParams


def test_of_params_keeps_width_range_method_and_channel_axes():
    params = QuantParams(
        scale=np.ones(4, np.float32), zero_point=np.zeros(4, np.float32), qmin=-8, qmax=7, n_bits=4,
        method=QuantizationMethod.POWER_OF_TWO, signed=True, channel_axis=(2, 3),
    )  # fmt: skip
    grid = KernelGrid.of(params)
    assert grid == KernelGrid(n_bits=4, qmin=-8, qmax=7, method="power_of_two", axes=(2, 3))
    assert KernelGrid.of(QuantParams(**{**params.__dict__, "channel_axis": None})).axes == ()
    assert KernelGrid.of(QuantParams(**{**params.__dict__, "channel_axis": 3})).axes == (3,)


def test_config_round_trip_is_json():
    grid = KernelGrid(n_bits=8, qmin=-127, qmax=127, method="symmetric", axes=(1,))
    config = json.loads(json.dumps(grid.get_config()))
    assert KernelGrid.from_config(config) == grid
    assert KernelGrid.from_config(grid) is grid


@pytest.mark.parametrize(
    "config, words",
    [
        ({"n_bits": 8, "qmin": -127, "qmax": 127}, "method"),  # a key missing
        ({"n_bits": 8, "qmin": -127, "qmax": 127, "method": "symmetric", "axis": [1]}, "axes"),  # misspelt
        ({"n_bits": 8, "qmin": -127, "qmax": 127, "method": "symetric"}, "symmetric"),
        ({"n_bits": 8, "qmin": 5, "qmax": 5, "method": "symmetric"}, "qmin < qmax"),
        ([8, -127, 127], "dict with keys"),
    ],
)
def test_bad_descriptions_are_config_errors_that_say_what_is_expected(config, words):
    with pytest.raises(ConfigError, match=words):
        KernelGrid.from_config(config)


def test_a_wrapper_keeps_typed_grids_and_saves_them_as_dicts(tmp_path):
    grid = KernelGrid(n_bits=4, qmin=-8, qmax=7, method="symmetric", axes=(1,))
    inputs = keras.Input((3,))
    wrapper = QuantizeWrapper(
        keras.layers.Dense(4), kind="dense", kernel_quantizers={"kernel": grid}, name="q"
    )
    model = keras.Model(inputs, wrapper(inputs))
    wrapper.grid_variables("kernel")[0].assign(np.full((1, 4), 0.1, np.float32))
    assert wrapper.kernel_quantizers == {"kernel": grid}
    assert wrapper.get_config()["kernel_quantizers"] == {"kernel": grid.get_config()}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("q").kernel_quantizers == {"kernel": grid}
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
