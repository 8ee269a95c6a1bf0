"""A Conv1D sensor model for the side-by-side benchmarks: synthetic 3-axis accelerometer windows, 6 activities.

Data: generated deterministically here (numpy ``default_rng`` with a fixed seed per split; no package ships a
suitable labelled inertial data set). Each sample is a 128-step window (2.56 s at 50 Hz) of 3 axes:

- classes 0-3 (walk, upstairs, downstairs, run): a gait waveform (fundamental + second harmonic, class-dependent
  frequency band, amplitude and harmonic ratio; the bands overlap, so the classes are not separable by frequency
  alone), mixed into the axes by a random rotation, on top of gravity along a tilted z axis;
- classes 4-5 (sit, lie): gravity along a class-dependent direction with a random tilt of up to 35 degrees,
  slow drift and small tremor;
- every sample: white noise (sigma 0.35) and a random gain in [0.8, 1.25].

Model (``build``): 4 Conv1D + BatchNormalization + ReLU blocks (widths 32/32/64/64, two of stride 2), global
average pooling, Dense 64 + ReLU, Dense 6 + softmax (33.6k parameters, 84% of them in Conv1D kernels). Trained
once on 12,000 samples (Adam, 12 epochs, seed 0) and cached as ``sensor.keras`` under the cache folder given
to ``get_model``. The builder uses only ``keras.layers`` / ``keras.Input`` / ``keras.Model``, so the same
function builds the architecture under Keras 2 (MCT's TensorFlow 2.15 venv) and Keras 3.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
from keras import layers

STEPS, AXES, CLASSES = 128, 3, 6
RATE_HZ = 50.0
# gait classes: (low Hz, high Hz, amplitude, second-harmonic ratio)
GAIT = {0: (1.4, 2.2, 1.0, 0.5), 1: (1.2, 2.0, 1.1, 0.8), 2: (1.6, 2.4, 1.3, 0.3), 3: (2.2, 3.2, 2.0, 0.4)}
POSTURE = {4: (0.0, 0.6, 0.8), 5: (0.9, 0.1, 0.4)}  # resting gravity directions (normalised below)
SEEDS = {"train": 0, "test": 1}


def _rotations(rng: np.random.Generator, n: int, max_angle: float) -> np.ndarray:
    """``n`` random 3x3 rotation matrices about random axes, angles uniform in [0, max_angle] radians."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(0.0, max_angle, size=n)[:, None, None]
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(0, 2, 1)
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def make_data(n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: ``n`` windows float32 ``[n, 128, 3]`` and int64 labels, deterministic for a split."""
    rng = np.random.default_rng(SEEDS[split])
    y = rng.integers(0, CLASSES, size=n)
    t = np.arange(STEPS) / RATE_HZ
    x = np.zeros((n, STEPS, AXES))
    rot = _rotations(rng, n, np.radians(35.0))
    for c, (lo, hi, amp, harmonic) in GAIT.items():
        idx = np.flatnonzero(y == c)
        f = rng.uniform(lo, hi, size=(len(idx), 1))
        phase = rng.uniform(0, 2 * np.pi, size=(len(idx), 1))
        wave = np.sin(2 * np.pi * f * t + phase) + harmonic * np.sin(4 * np.pi * f * t + 2 * phase)
        wave *= amp * rng.uniform(0.7, 1.3, size=(len(idx), 1))
        direction = rng.normal(size=(len(idx), 3)) * np.array([1.0, 1.0, 0.5])
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        x[idx] = wave[:, :, None] * direction[:, None, :] + np.array([0.0, 0.0, 1.0])
    for c, g in POSTURE.items():
        idx = np.flatnonzero(y == c)
        g = np.asarray(g) / np.linalg.norm(g)
        drift = np.cumsum(rng.normal(scale=0.01, size=(len(idx), STEPS, AXES)), axis=1)
        tremor = 0.08 * np.sin(2 * np.pi * rng.uniform(4, 8, size=(len(idx), 1, 1)) * t[None, :, None])
        x[idx] = g + drift + tremor
    x = np.einsum("nij,ntj->nti", rot, x)
    x = x * rng.uniform(0.8, 1.25, size=(n, 1, 1)) + rng.normal(scale=0.35, size=x.shape)
    return x.astype("float32"), y.astype("int64")


def build() -> keras.Model:
    inputs = keras.Input((STEPS, AXES), name="imu")
    x = inputs
    for width, kernel, stride in ((32, 7, 1), (32, 5, 2), (64, 5, 2), (64, 3, 1)):
        x = layers.Conv1D(width, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(CLASSES, activation="softmax")(x), name="sensor")


def train(epochs: int = 12, n_train: int = 12000, verbose: int = 2) -> keras.Model:
    keras.utils.set_random_seed(0)
    x, y = make_data(n_train, "train")
    x_test, y_test = make_data(2000, "test")
    model = build()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=verbose)
    _, acc = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(f"sensor: {epochs} epochs in {time.perf_counter() - start:.0f} s, test accuracy {acc * 100:.2f}%")
    return model


def get_model(cache: Path) -> keras.Model:
    """The trained sensor model from ``cache / 'sensor.keras'`` (trained and saved there when missing)."""
    path = Path(cache) / "sensor.keras"
    if path.exists():
        return keras.models.load_model(path)
    model = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    tmp.replace(path)
    return model
