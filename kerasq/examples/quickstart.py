"""Quickstart: train a small CNN, quantize it to W8A8 with kerasq, export it to an INT8 TFLite file and run
that file on LiteRT; print the accuracy of each.

Runs offline: the default data set is scikit-learn's bundled 8x8 handwritten digits (1,797 images).
``--dataset cifar10`` uses the CIFAR-10 npz files of ``--data-dir`` (``cifar10_train.npz`` / ``cifar10_test.npz``).

    python -m kerasq.examples.quickstart [--dataset digits|cifar10] [--platform imx500|tflite] [--out q.keras]
                                         [--tflite q.tflite]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

import kerasq
from kerasq.export import keras_export_model
from kerasq.export.runtimes import predict_litert


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def load_cifar10(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train, test = np.load(data_dir / "cifar10_train.npz"), np.load(data_dir / "cifar10_test.npz")
    return (train["x"].astype("float32") / 255.0, train["y"].astype("int64"),
            test["x"].astype("float32") / 255.0, test["y"].astype("int64"))  # fmt: skip


def build_cnn(input_shape: tuple[int, ...], classes: int) -> keras.Model:
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="swish")(x)
    x = keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="quickstart_cnn")


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), -1) == y) * 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--platform", default="imx500")
    parser.add_argument("--out", type=Path, default=None, help="save the quantized model here (.keras)")
    parser.add_argument("--tflite", type=Path, default=None, help="keep the INT8 TFLite file here")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    if args.dataset == "digits":
        x_train, y_train, x_test, y_test = load_digits()
    else:
        x_train, y_train, x_test, y_test = load_cifar10(args.data_dir)
    epochs = args.epochs or (15 if args.dataset == "digits" else 5)
    model = build_cnn(x_train.shape[1:], 10)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    print(f"training a small CNN on {args.dataset} ({len(x_train)} images, {epochs} epochs)...")
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)

    calibration = x_train[:512]
    start = time.perf_counter()
    q_model, info = kerasq.ptq.keras_post_training_quantization(
        model,
        calibration,
        target_platform_capabilities=kerasq.get_target_platform_capabilities(args.platform),
    )
    seconds = time.perf_counter() - start
    print(info.summary())
    print(f"\nfloat accuracy:     {accuracy(model, x_test, y_test):6.2f}%")
    print(
        f"kerasq W8A8 ({args.platform}): {accuracy(q_model, x_test, y_test):6.2f}%  (quantized in {seconds:.1f} s)"
    )
    print(
        f"weights: {info.float_weights_memory_bytes:,} B float -> {info.stored_weights_bytes:,} B quantized"
    )
    if args.out:
        q_model.save(args.out)
        print(f"saved {args.out}")
    export_and_run(q_model, x_test, y_test, args.tflite)
    return 0


def export_and_run(q_model: keras.Model, x_test: np.ndarray, y_test: np.ndarray, path: Path | None) -> None:
    """INT8 TFLite export of ``q_model`` (to ``path``, or a temporary file), then its accuracy on LiteRT."""
    with tempfile.TemporaryDirectory() as tmp:
        report = keras_export_model(q_model, path or Path(tmp) / "q.tflite", "tflite", "int8")
        print("\n" + report.summary())
        probs = predict_litert(report.path.read_bytes(), x_test)
    print(f"INT8 file on LiteRT: {float(np.mean(np.argmax(probs, -1) == y_test) * 100):6.2f}%")


if __name__ == "__main__":
    raise SystemExit(main())
