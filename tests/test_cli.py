"""The kerasq command line, end to end on a trained model and data files, including its error paths."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.cli import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main, parse_budget
from kerasq.export.file_bytes import file_bytes


@pytest.fixture(scope="module")
def files(trained_cnn, cifar, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    trained_cnn.save(root / "float.keras")
    x_train, _, x_test, y_test = cifar
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    np.savez(root / "calib.npz", x=to_uint8(x_train[:256]))
    np.savez(root / "test.npz", x=to_uint8(x_test[:1000]), y=y_test[:1000])
    return root


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _accuracy(text: str) -> float:
    return float(text.split("top-1 accuracy ")[1].split("%")[0])


def test_quantize_to_int8_tflite_then_info_and_eval(files, capsys):
    out = files / "q.tflite"
    code, text, _ = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                         "--rescale", 1 / 255, "--tpc", "tflite", "-o", out)  # fmt: skip
    assert code == EXIT_OK and out.exists(), text
    code, text, _ = _run(capsys, "info", out)
    types = text.split("tensor types: ")[1].split("\n")[0]
    assert code == EXIT_OK and "int8 x" in types and "float32 x2," in types  # float only at the model edges
    _, float_text, _ = _run(
        capsys, "eval", files / "float.keras", "--data", files / "test.npz", "--rescale", 1 / 255
    )
    code, q_text, _ = _run(capsys, "eval", out, "--data", files / "test.npz", "--rescale", 1 / 255)
    assert code == EXIT_OK
    assert _accuracy(q_text) >= _accuracy(float_text) - 1.5


def test_quantize_to_keras_and_savedmodel(files, capsys):
    code, _, _ = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                      "--rescale", 1 / 255, "-o", files / "q.keras")  # fmt: skip
    assert code == EXIT_OK
    code, text, _ = _run(capsys, "info", files / "q.keras")
    assert code == EXIT_OK and "weights memory" in text and "ActivationQuantizer" in text
    code, _, _ = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                      "--rescale", 1 / 255, "-o", files / "q_saved")  # fmt: skip
    assert code == EXIT_OK
    served = tf.saved_model.load(str(files / "q_saved"))
    x = np.load(files / "test.npz")["x"][:4].astype(np.float32) / 255
    assert served.serve(x).shape == (4, 10)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["quantize", "missing.keras", "--data", "calib.npz", "-o", "o.keras"], EXIT_INPUT, "does not exist"),
        (["quantize", "float.keras", "--data", "calib.txt", "-o", "o.keras"], EXIT_INPUT, "does not exist"),
        (["quantize", "float.keras", "--data", "test.npz", "--tpc", "gpu9", "-o", "o.keras"], EXIT_USAGE,
         "Unknown target platform"),
        (["quantize", "float.keras", "--data", "calib.npz", "--error-method", "median", "-o", "o.keras"],
         EXIT_USAGE, "error_method"),
        (["eval", "float.keras", "--data", "calib.npz"], EXIT_INPUT, "no labels"),
        (["info", "nothing.tflite"], EXIT_INPUT, "does not exist"),
    ],
)  # fmt: skip
def test_error_paths(files, capsys, argv, code, message):
    argv = [str(files / a) if a.endswith((".keras", ".npz", ".txt", ".tflite")) else a for a in argv]
    got, _, err = _run(capsys, *argv)
    assert got == code
    assert message in err


def test_wrong_data_file_type(files, capsys):
    bad = files / "calib.csv"
    bad.write_text("1,2,3\n")
    code, _, err = _run(capsys, "quantize", files / "float.keras", "--data", bad, "-o", files / "o.keras")
    assert code == EXIT_INPUT and "unsupported data file" in err


def test_imx500_tflite_export_lists_the_requantized_tensors(files, capsys):
    # imx500 fuses conv -> swish; TFLite stores the conv output, so the file requantizes it, and says so.
    out = files / "imx.tflite"
    code, text, err = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                           "--rescale", 1 / 255, "--tpc", "imx500", "-o", out)  # fmt: skip
    assert code == EXIT_OK, err
    assert "place(s) where the file computes differently from Keras" in text
    assert "dw: output stored as int8" in text  # the depthwise conv before the swish
    assert out.exists()


def test_console_script_is_installed():
    exe = shutil.which("kerasq")
    assert exe is not None, "pip install -e . registers the kerasq console script"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "quantize" in result.stdout


def test_quantize_under_a_weights_budget(files, capsys):
    out = files / "mp.tflite"
    code, text, _ = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                         "--rescale", 1 / 255, "--tpc", "tflite", "--weights-memory", "50%", "-o", out)  # fmt: skip
    assert code == EXIT_OK, text
    achieved = float(
        text.split("achieved ResourceUtilization(weights_memory=")[1]
        .split(",")[0]
        .split(")")[0]
        .replace(",", "")
    )
    full = kerasq.core.keras_resource_utilization_data(
        keras.models.load_model(files / "float.keras")
    ).weights_memory
    assert achieved <= 0.5 * full
    packed = int(text.split(" bytes with sub-8-bit weights bit-packed")[0].split("\n")[-1].replace(",", ""))
    assert packed < out.stat().st_size  # sub-8-bit weights pack smaller than their int8 storage
    code, q_text, _ = _run(capsys, "eval", out, "--data", files / "test.npz", "--rescale", 1 / 255)
    _, float_text, _ = _run(
        capsys, "eval", files / "float.keras", "--data", files / "test.npz", "--rescale", 1 / 255
    )
    assert code == EXIT_OK and _accuracy(q_text) >= _accuracy(float_text) - 8.0  # 2-bit layers on a small CNN


@pytest.mark.parametrize(
    "budget, code, message",
    [
        ("1KB", EXIT_MODEL, "weights_memory"),
        ("lots", EXIT_USAGE, "expected bytes"),
        ("0%", EXIT_USAGE, "positive"),
    ],
)
def test_budget_errors(files, capsys, budget, code, message):
    got, _, err = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                       "--weights-memory", budget, "-o", files / "never.keras")  # fmt: skip
    assert got == code and message in err
    assert not (files / "never.keras").exists()


def test_parse_budget():
    assert parse_budget("200KB", 0, "--weights-memory") == 200_000
    assert parse_budget("1.5G", 0, "--bops") == 1.5e9
    assert parse_budget("2KiB", 0, "--weights-memory") == 2048
    assert parse_budget("50%", 1000, "--weights-memory") == 500


def test_quantize_with_gradient_fine_tuning(files, capsys):
    out = files / "gptq.keras"
    code, text, _ = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                         "--rescale", 1 / 255, "--gptq-epochs", 1, "-o", out)  # fmt: skip
    assert code == EXIT_OK and out.exists(), text
    assert "gradient-based rounding: 1 epochs" in text


def test_int4_weights_make_the_file_smaller(files, capsys, cifar):
    layers = keras.layers
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(i)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(64, 1, activation="relu")(x))
    keras.Model(i, layers.Dense(10)(x)).save(files / "relu.keras")
    sizes = {}
    for name, extra in (("int8", []), ("int4", ["--int4-weights"])):
        out = files / f"w4_{name}.tflite"
        code, text, _ = _run(capsys, "quantize", files / "relu.keras", "--data", files / "calib.npz",
                             "--rescale", 1 / 255, "--tpc", "tflite", "--weights-memory", "50%", *extra,
                             "-o", out)  # fmt: skip
        assert code == EXIT_OK, text
        sizes[name] = out.stat().st_size
    assert sizes["int8"] - sizes["int4"] > 1000, sizes  # the 4- and 2-bit kernels at half a byte per value


def test_int4_weights_refused_where_the_converter_loses_ranges(files, capsys):
    code, _, err = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                        "--rescale", 1 / 255, "--tpc", "tflite", "--weights-memory", "50%", "--int4-weights",
                        "-o", files / "never.tflite")  # fmt: skip
    assert code == EXIT_MODEL and "without int4_weights" in err and "'dw_swish'" in err
    assert not (files / "never.tflite").exists()


# ---- .tflite files on TensorFlow Lite Micro, the platform a .tflite output picks, missing runtimes

PLATFORM_LINE = "platform: tflite (chosen for the .tflite output; pass --tpc to override)"


@pytest.fixture(scope="module")
def small(cifar, tmp_path_factory):
    """A small CNN trained for three short epochs, 64 calibration and 200 test images: TFLM's kernels are slow."""
    root = tmp_path_factory.mktemp("cli_small")
    x_train, y_train, x_test, y_test = cifar
    keras.utils.set_random_seed(0)
    layers = keras.layers
    i = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(i)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(16, 1, activation="relu")(x))
    model = keras.Model(i, layers.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train[:4000], y_train[:4000], batch_size=64, epochs=3, verbose=0)
    model.save(root / "small.keras")
    to_uint8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    np.savez(root / "calib.npz", x=to_uint8(x_train[:64]))
    np.savez(root / "test.npz", x=to_uint8(x_test[:200]), y=y_test[:200])
    return root


def _quantize_small(capsys, small, out, *extra):
    return _run(capsys, "quantize", small / "small.keras", "--data", small / "calib.npz", "--rescale", 1 / 255,
                *extra, "-o", out)  # fmt: skip


@pytest.fixture(scope="module")
def auto(small):
    """``kerasq quantize small.keras -o auto.tflite`` without --tpc: (the file, what the command printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["quantize", str(small / "small.keras"), "--data", str(small / "calib.npz"), "--rescale",
                     str(1 / 255), "-o", str(small / "auto.tflite")])  # fmt: skip
    assert code == EXIT_OK, printed.getvalue()
    return small / "auto.tflite", printed.getvalue()


def _number(text: str, before: str, after: str = " bytes") -> int:
    return int(text.split(before)[1].split(after)[0].replace(",", ""))


def test_tflite_output_without_tpc_uses_the_tflite_platform(small, auto, capsys):
    from kerasq.export import runtimes

    text = auto[1]
    assert text.count(PLATFORM_LINE) == 1 and "kerasq quantization (tflite)" in text
    code, explicit, _ = _quantize_small(capsys, small, small / "explicit.tflite", "--tpc", "tflite")
    assert code == EXIT_OK and PLATFORM_LINE not in explicit
    assert (small / "auto.tflite").read_bytes() == (small / "explicit.tflite").read_bytes()
    # kerasq's estimate next to TFLM's arena for the written file
    estimate = _number(text, "activation memory: ", " bytes (kerasq's estimate)")
    assert estimate == _number(text, "activation_memory=", ", ")  # the figure of the quantization summary
    arena = _number(text, "TFLM arena for auto.tflite: ")
    assert arena == runtimes.tflm_arena_bytes((small / "auto.tflite").read_bytes())
    assert arena > runtimes.peak_live_tensor_bytes((small / "auto.tflite").read_bytes()) >= estimate


def test_an_explicit_tpc_wins_and_other_outputs_keep_imx500(small, auto, capsys):
    code, text, _ = _quantize_small(capsys, small, small / "imx.tflite", "--tpc", "imx500")
    assert code == EXIT_OK, text
    assert PLATFORM_LINE not in text and "kerasq quantization (imx500)" in text
    assert (small / "imx.tflite").read_bytes() != (small / "auto.tflite").read_bytes()
    code, text, _ = _quantize_small(capsys, small, small / "q.keras")
    assert code == EXIT_OK and PLATFORM_LINE not in text and "kerasq quantization (imx500)" in text
    assert "activation memory:" not in text  # the arena comparison is for .tflite INT8 files


def test_eval_on_tflm_matches_litert_and_prints_the_arena(small, auto, capsys, monkeypatch):
    from kerasq.export import runtimes

    ran_on_tflm, predict_tflm = [], runtimes.predict_tflm
    monkeypatch.setattr(runtimes, "predict_tflm", lambda fb, x, **kw: ran_on_tflm.append(len(x)) or predict_tflm(
        fb, x, **kw))  # fmt: skip
    path = auto[0]
    argv = ["eval", path, "--data", small / "test.npz", "--rescale", 1 / 255]
    code, litert, _ = _run(capsys, *argv)
    assert code == EXIT_OK and "TFLM arena" not in litert and ran_on_tflm == []
    code, tflm, _ = _run(capsys, *argv, "--runtime", "tflm")
    assert code == EXIT_OK and "on TFLite Micro" in tflm and ran_on_tflm == [200]
    assert abs(_accuracy(tflm) - _accuracy(litert)) <= 0.5  # at most 1 of 200 samples (measured: equal)
    assert _accuracy(litert) > 23.0  # trained (chance is 10%; measured 25.0%)
    assert _number(tflm, "TFLM arena: ") == runtimes.tflm_arena_bytes(path.read_bytes())
    code, _, err = _run(
        capsys, "eval", small / "small.keras", "--data", small / "test.npz", "--runtime", "tflm"
    )
    assert code == EXIT_USAGE and "runs .tflite files" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(path), "--data", str(small / "test.npz"), "--runtime", "tvm"])
    assert exit_info.value.code == EXIT_USAGE


def test_info_tflite_prints_the_arena_and_the_files_live_tensor_bytes(small, auto, capsys):
    from kerasq.export import runtimes

    flatbuffer = (small / "auto.tflite").read_bytes()
    code, text, _ = _run(capsys, "info", small / "auto.tflite")
    assert code == EXIT_OK
    assert _number(text, "TFLM arena: ") == runtimes.tflm_arena_bytes(flatbuffer)
    peak = _number(text, "activation memory: ", " bytes (kerasq's estimate for the file")
    assert peak == runtimes.peak_live_tensor_bytes(flatbuffer) > 0
    parts = file_bytes(flatbuffer)
    assert _number(text, "file bytes: ", " bytes = constants") == len(flatbuffer) == parts.total
    assert _number(text, "+ quantization vectors ", " + tensor names") == parts.quantization > 0


def _sign_model(path):
    """A float .tflite file with SIGN, an op TFLite Micro has no kernel for."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def sign(x):
        return tf.math.sign(x)

    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([sign.get_concrete_function()], sign).convert()
    )
    return path


def test_a_file_tflm_cannot_run(small, capsys):
    path = _sign_model(small / "sign.tflite")
    np.savez(small / "vectors.npz", x=np.ones((4, 8), np.float32), y=np.zeros(4, np.int64))
    code, text, _ = _run(capsys, "info", path)
    assert code == EXIT_OK and "TFLM arena: TFLite Micro cannot run this file" in text and "SIGN" in text
    code, _, err = _run(capsys, "eval", path, "--data", small / "vectors.npz", "--runtime", "tflm")
    assert code == EXIT_MODEL and "no kernel for the SIGN op" in err
    (small / "junk.tflite").write_bytes(b"\0" * 64)
    code, _, err = _run(capsys, "info", small / "junk.tflite")
    assert code == EXIT_INPUT and "cannot read" in err


def test_missing_tflite_micro(small, auto, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import tflite_micro raises ImportError
    code, text, _ = _run(capsys, "info", small / "auto.tflite")
    assert (
        code == EXIT_OK and 'TFLM arena: tflite-micro is not installed (pip install "kerasq[tflm]")' in text
    )
    assert "kerasq's estimate for the file" in text
    code, out, err = _run(
        capsys, "eval", small / "auto.tflite", "--data", small / "test.npz", "--runtime", "tflm"
    )
    assert code == EXIT_INPUT and "kerasq[tflm]" in err and "tflite-micro" in err and "Traceback" not in err
    code, text, _ = _quantize_small(capsys, small, small / "no_tflm.tflite")
    assert code == EXIT_OK and "(kerasq's estimate)" in text and "TFLM arena" not in text


def test_missing_litert_is_exit_3(small, auto, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    code, _, err = _run(capsys, "eval", small / "auto.tflite", "--data", small / "test.npz")
    assert code == EXIT_INPUT and "ai-edge-litert" in err and "kerasq[litert]" in err
    code, _, err = _run(capsys, "info", small / "auto.tflite")
    assert code == EXIT_INPUT and "ai-edge-litert" in err


# ---- broken files, data of another shape, bad arguments, outputs that would destroy user files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained 32x32 model, its float .tflite file, 32x32 and 28x28 labelled data: quick to run."""
    from kerasq.export import keras_export_model

    root = tmp_path_factory.mktemp("cli_tiny")
    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(i))
    model = keras.Model(i, keras.layers.Dense(10, activation="softmax")(x))
    model.save(root / "tiny.keras")
    keras_export_model(model, root / "tiny.tflite", "tflite")
    rng = np.random.default_rng(0)
    np.savez(root / "calib.npz", x=rng.random((8, 32, 32, 3), np.float32))
    np.savez(root / "test.npz", x=rng.random((8, 32, 32, 3), np.float32), y=rng.integers(0, 10, 8))
    np.savez(root / "test28.npz", x=rng.random((8, 28, 28, 3), np.float32), y=rng.integers(0, 10, 8))
    return root


def _bad_tensor_index(flatbuffer: bytes) -> bytes:
    """The file with its first operator reading a tensor that does not exist (LiteRT raises RuntimeError)."""
    import flatbuffers

    from kerasq.export.runtimes import litert_schema

    model = litert_schema().ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.subgraphs[0].operators[0].inputs[0] = 999
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("damage", ["bad_tensor_index", "truncated", "zeros"])
def test_eval_of_a_corrupted_tflite_file(tiny, capsys, damage):
    data = (tiny / "tiny.tflite").read_bytes()
    broken = {"bad_tensor_index": _bad_tensor_index, "truncated": lambda d: d[: len(d) // 2],
              "zeros": lambda d: b"\0" * 64}[damage](data)  # fmt: skip
    path = tiny / f"{damage}.tflite"
    path.write_bytes(broken)
    code, _, err = _run(capsys, "eval", path, "--data", tiny / "test.npz")
    assert code == EXIT_INPUT and "not a valid .tflite file" in err and str(path) in err
    assert "does not fit" not in err  # the data is fine; the file is not


@pytest.mark.parametrize("model", ["tiny.tflite", "tiny.keras"])
def test_eval_refuses_data_of_another_shape(tiny, capsys, model):
    code, out, err = _run(capsys, "eval", tiny / model, "--data", tiny / "test28.npz")
    assert code == EXIT_INPUT and "accuracy" not in out
    assert "(28, 28, 3)" in err and "(32, 32, 3)" in err and "'image'" in err


@pytest.mark.parametrize("damage", ["junk", "truncated"])
def test_a_corrupted_keras_file_is_not_reported_missing(tiny, capsys, damage):
    data = (tiny / "tiny.keras").read_bytes()
    path = tiny / f"{damage}.keras"
    path.write_bytes(b"not a zip archive" * 8 if damage == "junk" else data[: len(data) // 2])
    for argv in (["eval", path, "--data", tiny / "test.npz"], ["info", path]):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_INPUT and "not a valid .keras file" in err and "File not found" not in err


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_n_samples_must_be_positive(tiny, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", str(tiny / "tiny.keras"), "--data", str(tiny / "calib.npz"), "--n-samples", value,
              "-o", str(tiny / "never.keras")])  # fmt: skip
    assert exit_info.value.code == EXIT_USAGE and "--n-samples" in capsys.readouterr().err
    assert not (tiny / "never.keras").exists()


@pytest.mark.parametrize("name", ["q.onnx", "q.h5", "q.pb"])
def test_unknown_output_suffixes_are_refused(tiny, capsys, name):
    code, _, err = _run(
        capsys, "quantize", tiny / "tiny.keras", "--data", tiny / "calib.npz", "-o", tiny / name
    )
    assert code == EXIT_INPUT and name in err and ".keras" in err and ".tflite" in err and "SavedModel" in err
    assert not (tiny / name).exists()


def test_quantize_keeps_an_output_folder_of_user_files(tiny, capsys):
    folder = tiny / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    argv = ["quantize", tiny / "tiny.keras", "--data", tiny / "calib.npz", "-o", folder]
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_INPUT and "notes.txt" in err and "--overwrite" in err
    assert (folder / "notes.txt").read_text() == "my notes" and "resources:" not in out  # refused up front
    code, _, err = _run(capsys, *argv, "--overwrite")
    assert code == EXIT_OK, err
    assert tf.saved_model.contains_saved_model(str(folder)) and not (folder / "notes.txt").exists()


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """A two-input model whose .tflite file lists its inputs in another order than Keras, and named data."""
    from kerasq.export import keras_export_model

    root = tmp_path_factory.mktemp("cli_two_inputs")
    keras.utils.set_random_seed(0)
    image, meta = keras.Input((8, 8, 3), name="image"), keras.Input((4,), name="meta")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model([image, meta], keras.layers.Dense(10)(keras.layers.Concatenate()([x, meta])))
    model.save(root / "two.keras")
    keras_export_model(model, root / "two.tflite", "tflite")
    rng = np.random.default_rng(0)
    data = {"image": rng.normal(size=(64, 8, 8, 3)).astype("float32"),
            "meta": rng.normal(size=(64, 4)).astype("float32")}  # fmt: skip
    labels = np.argmax(model.predict([data["image"], data["meta"]], verbose=0), -1)
    np.savez(root / "test.npz", y=labels, **data)
    np.savez(root / "no_meta.npz", image=data["image"], y=labels)
    return root


def test_eval_matches_multi_input_files_by_name(two_inputs, capsys):
    for model in ("two.tflite", "two.keras"):
        code, out, err = _run(capsys, "eval", two_inputs / model, "--data", two_inputs / "test.npz")
        assert code == EXIT_OK and _accuracy(out) == 100.0, (model, out, err)
        code, _, err = _run(capsys, "eval", two_inputs / model, "--data", two_inputs / "no_meta.npz")
        assert code == EXIT_INPUT and "'meta'" in err and "image" in err
