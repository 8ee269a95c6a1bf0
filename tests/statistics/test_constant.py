"""Tensors that never varied over the calibration data are named in one warning."""

from __future__ import annotations

import numpy as np

from kerasq.statistics import TensorStats
from kerasq.statistics.constant import constant_tensor_warning, is_constant


def _stats(lo: float, hi: float) -> TensorStats:
    return TensorStats(np.zeros(64), 1.0, lo, hi, 100)


def test_constant_tensors_are_listed_first_few_by_name():
    stats = {
        "relu": _stats(0, 0),
        "conv": _stats(-1, 2),
        "a": _stats(3, 3),
        "b": _stats(0, 0),
        "c": _stats(0, 0),
    }
    message = constant_tensor_warning(stats)
    assert message.startswith(
        "4 quantized tensor(s) never varied over the representative data: the outputs of 'relu' (always 0), "
        "'a' (always 3), 'b' (always 0) and 1 more."
    )
    assert "'conv'" not in message


def test_varying_tensors_give_no_warning():
    assert constant_tensor_warning({"conv": _stats(-1, 2), "tiny": _stats(0.0, 1e-6)}) is None
    assert is_constant(_stats(1e30, 1e30 * (1 + 1e-9))) and not is_constant(_stats(0.0, 1e-30))
