"""The fine-tuning objective: distance between student and teacher at the outputs of the quantized layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from kerasq.errors import ConfigError
from kerasq.hessian import activation_hessian_scores

_EPS = 1e-12


def weighted_mse(student: Sequence[Any], teacher: Sequence[Any], weights: Sequence[Any]) -> Any:
    """``sum_i mean_b(weights[i][b] * mean((student_i[b] - teacher_i[b])**2))``: ``weights[i]`` holds one weight
    per sample (or a scalar) for compare point ``i``."""
    terms = []
    for s, t, w in zip(student, teacher, weights, strict=True):
        per_sample = ops.mean(ops.reshape(ops.square(s - t), (ops.shape(s)[0], -1)), axis=1)
        terms.append(ops.mean(w * per_sample))
    return ops.sum(ops.stack(terms))


def sample_weights(scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per-batch [samples, points] Hessian scores scaled so a sample's weights sum to 1 on average: samples
    whose output is more sensitive count more (sample attention)."""
    mean_total = float(np.mean(np.concatenate([s.sum(axis=1) for s in scores])))
    if not np.isfinite(mean_total) or mean_total <= 0:
        raise ConfigError(
            "The per-sample Hessian scores are not usable (zero or non-finite); set "
            "use_hessian_sample_attention=False."
        )
    return [(s / mean_total).astype(np.float32) for s in scores]


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
        raise ConfigError(
            "The Hessian scores of the compare points are not usable (zero or non-finite); set "
            "use_hessian_based_weights=False."
        )
    return (scores / scores.sum()).astype(np.float32)
