"""z_threshold: outliers removed from activation statistics before thresholds are chosen."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.core import CoreConfig, QuantizationConfig, QuantizationErrorMethod
from kerasq.statistics.histogram import TensorStats
from kerasq.statistics.outliers import remove_outliers


def test_remove_outliers_on_a_histogram():
    counts = np.zeros(64)
    counts[32:36] = 1000  # bulk on [0, 4)
    counts[63] = 1  # one value near 31.5
    stats = TensorStats(counts=counts, hist_range=32.0, min=0.0, max=31.9, num_values=4001)
    kept = remove_outliers(stats, 5.0)
    assert kept.counts[63] == 0 and kept.counts[32:36].sum() == 4000
    assert kept.max < 31.9 and kept.num_values == 4000
    assert remove_outliers(stats, 1000.0) is stats  # nothing beyond 1000 sigma


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(8, name="out")(x))


@pytest.mark.parametrize("method", [QuantizationErrorMethod.NOCLIPPING, QuantizationErrorMethod.MSE])
def test_z_threshold_lowers_the_error_with_injected_outliers(method):
    model = _model()
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(2048, 16)).astype("float32")
    calibration[:3] *= 300.0  # three corrupted calibration samples
    clean = rng.normal(size=(1024, 16)).astype("float32")
    reference = model.predict(clean, verbose=0)
    errors = {}
    for z in (None, 6.0):
        qc = QuantizationConfig(activation_error_method=method, z_threshold=z)
        q, _ = kerasq.ptq.keras_post_training_quantization(model, calibration, core_config=CoreConfig(qc))
        errors[z] = float(np.mean((q.predict(clean, verbose=0) - reference) ** 2) / np.mean(reference**2))
    print(method, errors)
    assert errors[6.0] < 0.5 * errors[None]


def test_z_threshold_is_validated():
    with pytest.raises(ValueError, match="z_threshold"):
        QuantizationConfig(z_threshold=-1)
