"""Non-finite values in the observed graph are a DataError naming the layer, never a crash of the process."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.errors import DataError
from kerasq.statistics import collect_statistics


def _summing_model() -> keras.Model:
    image = keras.Input((2, 2, 4), name="img")
    total = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="sum4")(image)
    return keras.Model(image, keras.layers.Conv2D(2, 1, name="head")(total))


# Before the fix, tf.histogram_fixed_width ran on an infinite range and killed the process (rc 139): pytest
# itself would crash here (faulthandler prints where), so the crash cannot pass unnoticed.
@pytest.mark.parametrize(
    ("value", "found"),
    [
        (1e38, "'sum4' (+inf values)"),  # 4e38 overflows float32
        (
            7e37,
            "'sum4' (values up to 2.8e+38, beyond the float32 range of a power-of-two grid)",
        ),  # 2**128 does
    ],
    ids=["inf", "range-overflow"],
)
def test_infinite_and_overflowing_ranges_are_data_errors_not_crashes(value, found):
    data = np.full((4, 2, 2, 4), value, "float32")
    with pytest.raises(DataError) as err:
        kerasq.ptq.keras_post_training_quantization(_summing_model(), data)
    message = str(err.value)
    assert f"on representative data batch 0, at the outputs of layer(s) {found}" in message
    assert "keep that layer float" in message and "Clip the values" in message
    if value == 1e38:
        assert "They first arise at layer 'sum4' (Conv2D)" in message


def _probe() -> keras.Model:
    image = keras.Input((3,), name="v")
    root = keras.layers.Lambda(keras.ops.sqrt, name="root")(image)
    return keras.Model(image, [image, root])


@pytest.mark.parametrize("bad_batch", [1, 6])  # eager, then the compiled step
def test_nan_on_a_later_batch_names_the_layer_and_batch(bad_batch):
    x = np.ones((8 * 8, 3), "float32")
    x[bad_batch * 8 + 3, 1] = -1.0  # sqrt(-1): NaN inside the model, the data itself is finite
    probe = _probe()
    data = RepresentativeData(x, input_specs_from_model(probe), batch_size=8)
    with pytest.raises(DataError) as err:
        collect_statistics(probe, ["v", "root"], data, num_bins=64)
    message = str(err.value)
    assert (
        f"on representative data batch {bad_batch}, at the outputs of layer(s) 'root' (NaN values)."
        in message
    )
    assert "Clip the values" in message


def test_ptq_names_the_float_layer_where_nan_first_arises():
    @keras.saving.register_keras_serializable("kerasq_tests")
    class Root(keras.layers.Layer):  # unknown to kerasq: kept float, so its output is not observed
        def call(self, t):
            return keras.ops.sqrt(t)

    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 3), name="img")
    x = Root(name="root")(keras.layers.Conv2D(4, 3, name="conv")(image))
    model = keras.Model(image, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype("float32")
    with pytest.raises(
        DataError, match=r"layer\(s\) 'head' \(NaN values\)\. They first arise at layer 'root' \(Root\)"
    ):
        kerasq.ptq.keras_post_training_quantization(model, x)
