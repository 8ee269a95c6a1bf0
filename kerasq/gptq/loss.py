"""The fine-tuning objective: distance between student and teacher at the outputs of the quantized layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasq.mixed_precision.hessian import activation_hessian_scores

_EPS = 1e-12


def weighted_mse(student: Sequence[Any], teacher: Sequence[Any], weights: Sequence[float]) -> Any:
    """``sum_i weights[i] * mean((student_i - teacher_i)**2)``."""
    terms = [w * ops.mean(ops.square(s - t)) for s, t, w in zip(student, teacher, weights, strict=True)]
    return ops.sum(ops.stack(terms))


def energy_weights(teacher_outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Equal say for every compare point: ``1 / (n * mean(t_i**2))``, so each term is a relative error."""
    energy = np.array([float(np.mean(np.square(np.asarray(t, np.float64)))) for t in teacher_outputs])
    return (1.0 / (len(energy) * np.maximum(energy, _EPS))).astype(np.float32)


def hessian_weights(probe: keras.Model, n_points: int, samples: list[np.ndarray]) -> np.ndarray:
    """Hessian-trace score of each compare point (``probe`` outputs: the ``n_points`` points, then the model
    outputs), normalized to sum to 1. ``score * mean squared error`` approximates the squared output error the
    point's error causes, so the weighted loss tracks the model output."""
    scores = np.array([float(s) for s in activation_hessian_scores(probe, n_points, [samples])])
    if not np.isfinite(scores).all() or scores.sum() <= 0:
        raise ValueError(
            "The Hessian scores of the compare points are not usable (zero or non-finite); set "
            "use_hessian_based_weights=False."
        )
    return (scores / scores.sum()).astype(np.float32)
