"""The export self-check: every quantizing TFLite export runs the file on the calibration samples the quantized
model keeps, compares it with the Keras model, and refuses a file that computes something else."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerasq
from kerasq.export import KerasExportSerializationFormat, QuantizationFormat, keras_export_model
from kerasq.export.verify import MIN_SQNR_DB, Verification, compare, sqnr_db
from kerasq.pipeline import REFERENCE_SAMPLES

layers = keras.layers
TFLITE = kerasq.get_target_platform_capabilities("tflite")


@keras.saving.register_keras_serializable(package="kerasq_tests")
class Twice(keras.layers.Layer):
    """A custom layer kerasq does not know (kept in float) computing ``x * 2``."""

    def call(self, x):
        return x * 2.0


def _twice_between_convs() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = Twice(name="twice")(x)
    x = layers.Conv2D(8, 3, padding="same")(x)
    outputs = layers.Dense(5)(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _int8(model, path, **kwargs):
    return keras_export_model(
        model, path, serialization_format=KerasExportSerializationFormat.TFLITE,
        quantization_format=QuantizationFormat.INT8, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def twice_quantized():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        _twice_between_convs(), x, target_platform_capabilities=TFLITE
    )
    return q_model


def test_a_float_layer_the_converter_folds_away_is_refused_by_name(twice_quantized, tmp_path):
    # The converter folds ``x * 2`` into the next convolution's fake-quantized kernel, whose clipping range is
    # the undoubled one: the file has no float op and no MUL, and differs from Keras by tens of output steps.
    with pytest.raises(kerasq.KerasqError, match=r"dB SQNR against Keras.*'twice' \(Twice\)"):
        _int8(twice_quantized, tmp_path / "twice.tflite")
    assert not (tmp_path / "twice.tflite").exists()


def test_verify_false_writes_the_file_anyway(twice_quantized, tmp_path):
    report = _int8(twice_quantized, tmp_path / "twice.tflite", verify=False)
    assert report.verification is None and report.path.stat().st_size > 0


def test_a_faithful_file_passes_with_its_numbers(trained_cnn, calibration, tmp_path):
    q_model, _ = kerasq.ptq.keras_post_training_quantization(trained_cnn, calibration[:64])
    report = _int8(q_model, tmp_path / "cnn.tflite")  # default platform: requantized fused tensors included
    check = report.verification
    assert check.samples == REFERENCE_SAMPLES
    assert check.sqnr_db >= 25.0 > MIN_SQNR_DB  # the trained CNN's file: 28-35 dB in the export tests
    assert f"{check.samples} calibration sample(s)" in report.summary()


def test_the_samples_survive_saving_and_loading(trained_cnn, calibration, tmp_path):
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        trained_cnn, calibration[:64], target_platform_capabilities=TFLITE
    )
    keras_export_model(q_model, tmp_path / "q.keras")
    loaded = keras.models.load_model(tmp_path / "q.keras")
    kept = loaded.get_layer("image_activation_quantizer").reference_inputs.numpy()
    np.testing.assert_array_equal(kept, calibration[:REFERENCE_SAMPLES])
    assert _int8(loaded, tmp_path / "q.tflite").verification.samples == REFERENCE_SAMPLES


def test_a_model_without_samples_is_exported_and_says_it_was_not_checked(trained_cnn, calibration, tmp_path):
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        trained_cnn, calibration[:64], target_platform_capabilities=TFLITE
    )
    config = q_model.get_config()  # as saved by a kerasq version that kept no samples
    for layer in config["layers"]:
        layer["config"].pop("reference_count", None)
    old = keras.Model.from_config(config)
    for source, target in zip(q_model.layers, old.layers, strict=True):
        target.set_weights([w.numpy() for w in source.weights if not w.path.endswith("reference_inputs")])
    report = _int8(old, tmp_path / "old.tflite")
    assert report.verification.samples == 0
    assert "not checked" in report.summary()


def test_sqnr_and_compare():
    ref = np.array([[1.0, -2.0, 3.0]], np.float32)
    assert sqnr_db(ref, ref) == float("inf")
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0, abs=1e-4)  # noise is 1/10 of the signal
    result = compare([ref], [ref + 0.5], samples=1)
    assert result.max_abs_error == pytest.approx(0.5) and result.sqnr_db < 20.0
    with pytest.raises(kerasq.KerasqError, match="2 outputs"):
        compare([ref], [ref, ref], samples=1)


def test_a_float_lambda_between_quantized_layers_is_refused_by_name(tmp_path):
    # The second case: Lambda(t * 2 + 1) kept float between quantized convolutions (17 steps off once).
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Lambda(lambda t: t * 2.0 + 1.0, name="affine_lambda")(x)
    x = layers.Conv2D(8, 3, padding="same")(x)
    model = keras.Model(inputs, layers.Dense(5)(layers.GlobalAveragePooling2D()(x)))
    data = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 3)).astype("float32")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(model, data, target_platform_capabilities=TFLITE)
    with pytest.raises(kerasq.KerasqError, match="'affine_lambda'"):
        _int8(q_model, tmp_path / "lambda.tflite")
    assert not (tmp_path / "lambda.tflite").exists()


def test_a_model_dominated_by_its_own_rounding_is_inconclusive_not_refused():
    noisy = Verification(
        samples=4, sqnr_db=1.1, max_abs_error=0.2, file_vs_float_db=0.8, keras_vs_float_db=4.5
    )
    assert not noisy.conclusive and "inconclusive" in noisy.summary()
    faulty = Verification(
        samples=4, sqnr_db=9.0, max_abs_error=1.4, file_vs_float_db=9.0, keras_vs_float_db=36.6
    )
    assert faulty.conclusive and "inconclusive" not in faulty.summary()
