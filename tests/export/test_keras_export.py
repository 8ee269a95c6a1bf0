"""keras_export_model: formats, round trips, argument checks, and atomic writes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.errors import ExportTargetError, KerasqError
from kerasq.export import (
    ExportError,
    KerasExportSerializationFormat,
    QuantizationFormat,
    keras_export,
    keras_export_model,
)
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

    monkeypatch.setattr(keras_export, "convert", lambda *a, **k: Conversion(b"x" * 10, ()))

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


# ---- what an export may replace, file permissions, unwritable targets


@pytest.fixture(scope="module")
def tiny():
    """A float model (FAKELY_QUANT, .keras and SavedModel exports need no quantization): fast to write."""
    i = keras.Input((4,), name="features")
    return keras.Model(i, keras.layers.Dense(2)(i))


def _user_folder(root):
    folder = root / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "src" / "train.py").write_text("print('train')")
    return folder


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_savedmodel_export_keeps_a_folder_of_user_files(tiny, tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(ExportTargetError, match=r"project.*notes\.txt.*src.*overwrite=True"):
        keras_export_model(tiny, folder, "savedmodel")
    assert _listing(folder) == ["notes.txt", "src", "src/train.py"]
    assert (folder / "src" / "train.py").read_text() == "print('train')"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no temporary left behind
    keras_export_model(tiny, folder, "savedmodel", overwrite=True)  # asked for: replaced
    assert tf.saved_model.contains_saved_model(str(folder)) and not (folder / "notes.txt").exists()


def test_savedmodel_export_keeps_a_regular_file(tiny, tmp_path):
    target = tmp_path / "model"
    target.write_text("not a model")
    with pytest.raises(ExportTargetError, match=r"'.*model' is a file.*overwrite=True"):
        keras_export_model(tiny, target, "savedmodel")
    assert target.read_text() == "not a model"


def test_savedmodel_export_keeps_files_added_to_a_previous_savedmodel(tiny, tmp_path):
    target = tmp_path / "saved"
    keras_export_model(tiny, target, "savedmodel")
    (target / "README.md").write_text("how to serve this")
    with pytest.raises(ExportTargetError, match=r"README\.md"):
        keras_export_model(tiny, target, "savedmodel")
    assert (target / "README.md").read_text() == "how to serve this"


def test_exports_replace_previous_exports_of_the_same_kind(tiny, tmp_path):
    keras_export_model(tiny, tmp_path / "saved", "savedmodel")
    keras_export_model(tiny, tmp_path / "saved", "savedmodel")  # a previous SavedModel
    (tmp_path / "empty").mkdir()
    keras_export_model(tiny, tmp_path / "empty", "savedmodel")  # an empty folder holds nothing to lose
    for name, fmt in (("m.keras", "keras"), ("m.tflite", "tflite")):
        (tmp_path / name).write_bytes(b"previous export")
        keras_export_model(tiny, tmp_path / name, fmt)
        assert (tmp_path / name).read_bytes() != b"previous export"
    assert tf.saved_model.contains_saved_model(str(tmp_path / "empty"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "m.keras", "m.tflite", "saved"]


@pytest.mark.parametrize(("name", "fmt"), [("m.keras", "keras"), ("m.tflite", "tflite")])
def test_file_export_onto_a_directory_names_the_path(tiny, tmp_path, name, fmt):
    target = tmp_path / name
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    with pytest.raises(ExportTargetError, match=r"is a directory.*overwrite=True") as info:
        keras_export_model(tiny, target, fmt)
    assert str(target) in str(info.value) and "kerasq-tmp" not in str(info.value)
    assert (target / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    keras_export_model(tiny, target, fmt, overwrite=True)
    assert target.is_file()


def test_export_into_a_read_only_folder_names_the_path(tiny, tmp_path, monkeypatch):
    import errno
    import os

    from kerasq.export import atomic

    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: let creating the temporary fail as it does for other users

        def denied(path, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

        monkeypatch.setattr(atomic.os, "access", lambda *a, **k: False)
        monkeypatch.setattr(atomic.os, "open", denied)
    try:
        for name, fmt in (("m.keras", "keras"), ("m.tflite", "tflite"), ("saved", "savedmodel")):
            with pytest.raises(KerasqError, match="not writable|Permission denied") as info:
                keras_export_model(tiny, folder / name, fmt)
            message = str(info.value)
            assert str(folder) in message and "kerasq-tmp" not in message and "choose" in message
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "fmt"), [("m.keras", "keras"), ("m.tflite", "tflite"), ("saved", "savedmodel")]
)
def test_exported_files_respect_the_umask(tiny, tmp_path, name, fmt):
    import os
    import stat

    old = os.umask(0o002)
    try:
        path = keras_export_model(tiny, tmp_path / name, fmt).path
    finally:
        os.umask(old)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o664)}


def test_atomic_output_names_the_target_when_the_folder_refuses_a_file(tmp_path, monkeypatch):
    import errno

    from kerasq.export import atomic

    def denied(path, *args, **kwargs):  # what creating the temporary meets in a read-only folder
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(atomic.os, "open", denied)
    with pytest.raises(ExportError, match="Permission denied") as info, atomic_output(tmp_path / "m.tflite"):
        pass
    assert str(tmp_path / "m.tflite") in str(info.value) and "kerasq-tmp" not in str(info.value)
