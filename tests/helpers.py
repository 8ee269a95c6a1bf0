"""Small helpers shared by tests (importable because pyproject sets pytest pythonpath=tests)."""

from __future__ import annotations

import keras
import numpy as np


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    probs = model.predict(x, batch_size=500, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y) * 100.0)


def mct_generator(x: np.ndarray, batch_size: int = 64):
    """MCT-style representative data: a zero-argument callable yielding [batch] lists."""

    def gen():
        for i in range(0, len(x), batch_size):
            yield [x[i : i + batch_size]]

    return gen
