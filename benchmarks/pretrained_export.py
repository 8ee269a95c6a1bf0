"""A pretrained model this repo did not build: PTQ on both platforms, INT8 export, LiteRT, side by side.

    pip download --no-deps cifar-10-model -d /tmp/pre && unzip -o /tmp/pre/cifar_10_model-*.whl -d /tmp/pre/w
    python -m benchmarks.pretrained_export --h5 /tmp/pre/w/cifar_10_model/trained_models/cnn_model.h5

The ``cifar-10-model`` wheel (PyPI) ships a VGG-style CIFAR-10 CNN (Conv2D + BatchNormalization, 969k
parameters) that reads raw 0-255 pixels. 256 shuffled training images calibrate; 2,000 shuffled test images
measure. Columns: top-1 of the float model, the Keras quantized model and the INT8 file; how often the file's
top-1 equals the Keras model's; SQNR of the file's outputs against Keras; file bytes per parameter; places the
file requantizes; the export self-check.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERASQ_PROGRESS", "0")


def main(argv: list[str] | None = None) -> int:
    import argparse

    import keras
    import numpy as np

    import kerasq
    from benchmarks.common import format_table, machine_info, publish, timed
    from benchmarks.zoo import data_dir
    from kerasq.export import QuantizationFormat
    from kerasq.export.runtimes import predict_litert
    from kerasq.export.tflite import convert
    from kerasq.export.verify import sqnr_db

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5", required=True, help="the model file (see the module docstring)")
    parser.add_argument("--report", default="pretrained_export")
    args = parser.parse_args(argv)

    model = keras.models.load_model(args.h5, compile=False)
    train, test = np.load(data_dir() / "cifar10_train.npz"), np.load(data_dir() / "cifar10_test.npz")
    rng = np.random.default_rng(0)
    calibration = train["x"][rng.permutation(len(train["y"]))[:256]].astype("float32")
    picked = rng.permutation(len(test["y"]))[:2000]
    x, y = test["x"][picked].astype("float32"), test["y"][picked].reshape(-1)
    float_top1 = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y) * 100)
    rows = []
    for platform in ("imx500", "tflite"):
        tpc = kerasq.get_target_platform_capabilities(platform)
        (q_model, _), ptq_s = timed(
            kerasq.ptq.keras_post_training_quantization, model, calibration, target_platform_capabilities=tpc
        )
        keras_out = q_model.predict(x, verbose=0)
        conversion = convert(q_model, QuantizationFormat.INT8)
        file_out = predict_litert(conversion.flatbuffer, x)
        rows.append({
            "platform": platform, "float": float_top1, "ptq_s": ptq_s,
            "keras": float(np.mean(keras_out.argmax(-1) == y) * 100),
            "file": float(np.mean(file_out.argmax(-1) == y) * 100),
            "agree": float(np.mean(keras_out.argmax(-1) == file_out.argmax(-1)) * 100),
            "sqnr": sqnr_db(keras_out, file_out),
            "bytes": len(conversion.flatbuffer) / model.count_params(),
            "requantized": len(conversion.requantized),
            "check": f"{conversion.verification.sqnr_db:.1f} dB on {conversion.verification.samples} samples",
        })  # fmt: skip
    columns = [("platform", "platform"), ("float", "float top-1 %"), ("keras", "Keras quantized top-1 %"),
               ("file", "INT8 file top-1 %"), ("agree", "file = Keras top-1 %"), ("sqnr", "file vs Keras dB"),
               ("bytes", "bytes / param"), ("requantized", "requantized places"), ("ptq_s", "PTQ s"),
               ("check", "self-check")]  # fmt: skip
    title = (f"kerasq on the cifar-10-model wheel's cnn_model.h5 ({model.count_params()} params), "
             f"{machine_info()}; 256 calibration, 2,000 test images")  # fmt: skip
    publish(args.report, f"{title}\n\n{format_table(rows, columns)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
