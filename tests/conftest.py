"""Shared fixtures: a small CNN trained on a CIFAR-10 subset once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERASQ_PROGRESS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import kerasq  # noqa: E402

kerasq.set_progress(False)

N_TRAIN = 10000
N_TEST = 2000


def _data_dir() -> Path:
    """The folder holding cifar10_*.npz: KERASQ_DATA_DIR when set (and then only it), else the shared folder.

    Missing data fails every test that needs it (a silent skip hid some 90 tests), unless
    KERASQ_ALLOW_MISSING_DATA=1 asks for the skip."""
    explicit = os.environ.get("KERASQ_DATA_DIR")
    candidates = [explicit] if explicit else [Path(__file__).resolve().parents[2] / "shared" / "data",
                                              "/work/shared/data"]  # fmt: skip
    for c in candidates:
        if (Path(c) / "cifar10_train.npz").exists():
            return Path(c)
    message = (
        f"CIFAR-10 npz files not found in {', '.join(map(str, candidates))}; set KERASQ_DATA_DIR to the folder "
        "holding cifar10_*.npz (or KERASQ_ALLOW_MISSING_DATA=1 to skip the tests that need them)"
    )
    if os.environ.get("KERASQ_ALLOW_MISSING_DATA") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="session")
def cifar():
    """(x_train, y_train, x_test, y_test): float32 images in [0, 1], int labels; fixed subsets."""
    d = _data_dir()
    train, test = np.load(d / "cifar10_train.npz"), np.load(d / "cifar10_test.npz")
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(train["y"]))[:N_TRAIN]
    te = rng.permutation(len(test["y"]))[:N_TEST]
    x_train = train["x"][tr].astype("float32") / 255.0
    x_test = test["x"][te].astype("float32") / 255.0
    return x_train, train["y"][tr].astype("int64"), x_test, test["y"][te].astype("int64")


def build_small_cnn() -> keras.Model:
    """Conv + BN + ReLU, a depthwise/swish residual block, pooling, Dense: the layers PTQ must handle."""
    layers = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(48, 3, padding="same", activation="relu", name="conv2")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.BatchNormalization(momentum=0.9, name="dw_bn")(y)
    y = layers.Activation("swish", name="dw_swish")(y)
    y = layers.Conv2D(48, 1, name="pw")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.MaxPooling2D(2, name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="session")
def trained_cnn(cifar):
    """The small CNN trained for a few epochs (46.55% on the 2000 test images)."""
    x_train, y_train, _, _ = cifar
    keras.utils.set_random_seed(0)
    model = build_small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x_train, y_train, batch_size=128, epochs=8, verbose=0)
    return model


@pytest.fixture(scope="session")
def calibration(cifar):
    """256 training images for calibration."""
    return cifar[0][:256]
