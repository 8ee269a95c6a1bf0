"""CIFAR-10 benchmark models, trained once and cached as .keras files.

- ``resnet``: ResNet-style (conv-BN-ReLU stem, 3 stages x 2 basic blocks, widths 16/32/64, projection
  shortcuts), GAP, Dense, softmax.
- ``mobilenetv2``: MobileNetV2-style inverted residuals (1x1 expand + BN + swish, 3x3 depthwise + BN + swish,
  1x1 linear projection + BN, residual Add), GAP, Dropout, Dense, softmax.

Trained on the 25,000 images of ``cifar10_train.npz`` with flips and padded random crops, Adam with cosine
decay, fixed seeds. Training is not bit-reproducible across machines (threaded float reductions): one
2-core run gave resnet 77.59% test top-1 (12 epochs, 1310 s) and mobilenetv2 74.42% (8 epochs, 1088 s); the
models the current benchmark results use score 77.84% and 74.94%. Cache: ``$KERASQ_CACHE_DIR`` (default
``~/.cache/kerasq/zoo``). Data:
``$KERASQ_DATA_DIR`` or ``../shared/data`` next to the repository.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers

REPO = Path(__file__).resolve().parents[1]
EPOCHS = {"resnet": 12, "mobilenetv2": 8}


def data_dir() -> Path:
    for candidate in (
        os.environ.get("KERASQ_DATA_DIR"),
        REPO.parent / "shared" / "data",
        "/work/shared/data",
    ):
        if candidate and (Path(candidate) / "cifar10_train.npz").exists():
            return Path(candidate)
    raise FileNotFoundError("cifar10_train.npz not found: set KERASQ_DATA_DIR to the folder holding it.")


def cache_dir() -> Path:
    path = Path(os.environ.get("KERASQ_CACHE_DIR", Path.home() / ".cache" / "kerasq")) / "zoo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_cifar10() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 images in [0, 1], int64 labels."""
    d = data_dir()
    train, test = np.load(d / "cifar10_train.npz"), np.load(d / "cifar10_test.npz")
    return (train["x"].astype("float32") / 255.0, train["y"].astype("int64").reshape(-1),
            test["x"].astype("float32") / 255.0, test["y"].astype("int64").reshape(-1))  # fmt: skip


def _bn_relu(x: keras.KerasTensor) -> keras.KerasTensor:
    return layers.ReLU()(layers.BatchNormalization()(x))


def _basic_block(x: keras.KerasTensor, width: int, stride: int) -> keras.KerasTensor:
    shortcut = x
    y = _bn_relu(layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x))
    y = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same", use_bias=False)(y))
    if stride != 1 or x.shape[-1] != width:
        shortcut = layers.BatchNormalization()(layers.Conv2D(width, 1, strides=stride, use_bias=False)(x))
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet() -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="image")
    x = _bn_relu(layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs))
    for stage, width in enumerate((16, 32, 64)):
        for block in range(2):
            x = _basic_block(x, width, 2 if stage > 0 and block == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10)(x)
    return keras.Model(inputs, layers.Activation("softmax")(x), name="resnet")


def _inverted_residual(x: keras.KerasTensor, width: int, stride: int, expand: int) -> keras.KerasTensor:
    y = layers.Conv2D(x.shape[-1] * expand, 1, use_bias=False)(x)
    y = layers.Activation("swish")(layers.BatchNormalization()(y))
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)
    y = layers.Activation("swish")(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(width, 1, use_bias=False)(y))
    if stride == 1 and x.shape[-1] == width:
        y = layers.Add()([x, y])
    return y


def build_mobilenetv2() -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("swish")(layers.BatchNormalization()(x))
    for width, stride, repeats in ((16, 1, 1), (24, 2, 2), (32, 2, 2), (64, 2, 2), (96, 1, 1)):
        for i in range(repeats):
            x = _inverted_residual(x, width, stride if i == 0 else 1, expand=1 if width == 16 else 4)
    x = layers.Conv2D(256, 1, use_bias=False)(x)
    x = layers.Activation("swish")(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(10)(x)
    return keras.Model(inputs, layers.Activation("softmax")(x), name="mobilenetv2")


BUILDERS: dict[str, Callable[[], keras.Model]] = {"resnet": build_resnet, "mobilenetv2": build_mobilenetv2}


def _augment(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_crop(tf.pad(x, [[4, 4], [4, 4], [0, 0]], mode="REFLECT"), [32, 32, 3])
    return x, y


def train(name: str, epochs: int | None = None, verbose: int = 2) -> keras.Model:
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_cifar10()
    epochs = epochs or EPOCHS[name]
    batch = 128
    ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(25000, seed=0)
          .map(_augment, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE))  # fmt: skip
    steps = epochs * int(np.ceil(len(x_train) / batch))
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, steps)
    model = BUILDERS[name]()
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=verbose)
    _, acc = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(f"{name}: {epochs} epochs in {time.perf_counter() - start:.0f} s, test accuracy {acc * 100:.2f}%")
    return model


def get_model(name: str, epochs: int | None = None) -> keras.Model:
    """The trained model ``name``, from the cache when present (trained and cached otherwise)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(BUILDERS)}")
    path = cache_dir() / f"{name}.keras"
    if path.exists():
        return keras.models.load_model(path)
    model = train(name, epochs)
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return model


def eval_subset(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` test images and labels from a fixed random permutation (seed 0): the CIFAR-10 test file is sorted by
    class, so ``x[:n]`` would hold only the first classes. ``n`` >= the file size gives all of it, in order."""
    if n >= len(x):
        return x, y
    order = np.random.default_rng(0).permutation(len(x))[:n]
    return x[order], y[order]


def benchmark_inputs(
    model_name: str, n_samples: int, eval_samples: int, batch_size: int = 64
) -> tuple[keras.Model, np.ndarray, np.ndarray, Callable[[], Iterator[list[np.ndarray]]]]:
    """What one benchmark row needs: the zoo model, its test images and labels (``eval_subset``), and the
    calibration batches (``representative_batches``)."""
    model = get_model(model_name)
    x_train, _, x_test, y_test = load_cifar10()
    x_test, y_test = eval_subset(x_test, y_test, eval_samples)
    return model, x_test, y_test, representative_batches(x_train, n_samples=n_samples, batch_size=batch_size)


def representative_batches(
    x: np.ndarray, n_samples: int = 1024, batch_size: int = 64
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """MCT-style calibration data: a zero-argument callable yielding ``[batch]`` lists (fixed subset)."""
    subset = x[np.random.default_rng(0).permutation(len(x))[:n_samples]]

    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(0, len(subset), batch_size):
            yield [subset[i : i + batch_size]]

    return gen


if __name__ == "__main__":
    import sys

    for model_name in sys.argv[1:] or list(BUILDERS):
        get_model(model_name)
