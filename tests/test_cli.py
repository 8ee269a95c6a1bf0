"""The kerasq command line, end to end on a trained model and data files, including its error paths."""

from __future__ import annotations

import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.cli import EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main, parse_budget


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


def test_export_the_platform_cannot_express_exits_4(files, capsys):
    # imx500 fuses conv -> add; TFLite's ADD needs an int8 range on the conv output.
    out = files / "imx.tflite"
    code, _, err = _run(capsys, "quantize", files / "float.keras", "--data", files / "calib.npz",
                        "--rescale", 1 / 255, "--tpc", "imx500", "-o", out)  # fmt: skip
    assert code == EXIT_MODEL and "tflite" in err
    assert not out.exists()


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
    assert code == EXIT_MODEL and "without int4_weights" in err and "Sigmoid" in err
    assert not (files / "never.tflite").exists()
