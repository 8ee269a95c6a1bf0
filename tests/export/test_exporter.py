"""keras_export_model: formats, round trips, argument checks, and atomic writes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.export import ExportError, KerasExportSerializationFormat, QuantizationFormat, keras_export_model
from kerasq.export import exporter as exporter_module
from kerasq.export.atomic import atomic_output
from kerasq.export.tflite import Conversion


@pytest.fixture(scope="module")
def quantized(cifar):
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(i)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(10, activation="softmax")(x))
    tpc = kerasq.get_target_platform_capabilities("tflite")
    q_model, _ = kerasq.ptq.keras_post_training_quantization(
        model, cifar[0][:128], target_platform_capabilities=tpc
    )
    return q_model, cifar[2][:64]


def test_keras_round_trip(quantized, tmp_path):
    q_model, x = quantized
    path = keras_export_model(q_model, tmp_path / "m.keras").path
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), q_model.predict(x, verbose=0))


def test_savedmodel_round_trip(quantized, tmp_path):
    q_model, x = quantized
    path = keras_export_model(q_model, tmp_path / "saved", serialization_format="savedmodel").path
    served = tf.saved_model.load(str(path))
    np.testing.assert_allclose(served.serve(x).numpy(), q_model.predict(x, verbose=0), atol=1e-6)


def test_fake_quant_tflite_is_float_and_matches(quantized, tmp_path):
    from kerasq.export.runtimes import predict_litert

    q_model, x = quantized
    path = keras_export_model(q_model, tmp_path / "fq.tflite", KerasExportSerializationFormat.TFLITE,
                              QuantizationFormat.FAKELY_QUANT).path  # fmt: skip
    out = predict_litert(path.read_bytes(), x)
    np.testing.assert_allclose(out, q_model.predict(x, verbose=0), atol=1e-5)


def test_int8_tflite_smaller_than_float(quantized, tmp_path):
    q_model, _ = quantized
    fq = keras_export_model(q_model, tmp_path / "fq.tflite", "tflite", "fakely_quant")
    int8 = keras_export_model(q_model, tmp_path / "q.tflite", "tflite", "int8")
    assert int8.size_bytes == int8.path.stat().st_size < fq.path.stat().st_size


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_model_path": "m.tflite"}, "ending in '.keras'"),
        ({"serialization_format": "onnx"}, "serialization_format"),
        ({"save_model_path": "m.keras", "quantization_format": "int8"}, "INT8"),
        ({"quantization_format": "int4"}, "quantization_format"),
    ],
)
def test_bad_arguments(quantized, tmp_path, kwargs, match):
    args = {"save_model_path": "m.keras"} | kwargs
    args["save_model_path"] = tmp_path / args["save_model_path"]
    with pytest.raises(ValueError, match=match):
        keras_export_model(quantized[0], **args)


def test_interrupted_export_leaves_no_partial_file(quantized, tmp_path, monkeypatch):
    target = tmp_path / "q.tflite"
    target.write_bytes(b"previous model")

    monkeypatch.setattr(exporter_module, "convert", lambda *a, **k: Conversion(b"x" * 10, ()))

    def interrupted_write(self, data):  # Ctrl-C while the file is being written
        self.open("wb").write(data[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(target), "write_bytes", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        keras_export_model(quantized[0], target, "tflite", "int8")
    monkeypatch.undo()
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["q.tflite"]


def test_atomic_output_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_output(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_output(target, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("converter crashed")
    assert (target / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_error_is_a_value_error():
    assert issubclass(ExportError, ValueError)


def test_mct_style_call(quantized, tmp_path):
    import kerasq as mct

    mct.exporter.keras_export_model(
        model=quantized[0],
        save_model_path=tmp_path / "m.tflite",
        serialization_format=mct.exporter.KerasExportSerializationFormat.TFLITE,
        quantization_format=mct.exporter.QuantizationFormat.INT8,
    )
    assert (tmp_path / "m.tflite").stat().st_size > 0


def test_int8_export_of_a_float_model_says_to_quantize_first(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ExportError, match="no kerasq quantizers.*Quantize it first"):
        keras_export_model(model, tmp_path / "f.tflite", "tflite", "int8")
    assert not (tmp_path / "f.tflite").exists()
