"""Learned rounding as pure functions (AdaRound-style soft rounding).

A kernel value ``w`` on the grid (scale ``s``, zero point ``z``) is ``s * (clip(floor(w/s) + h + z) - z)`` where
``h`` in [0, 1] decides between rounding down (0) and up (1). ``h = clip(sigmoid(v) * (ZETA - GAMMA) + GAMMA,
0, 1)`` (a rectified sigmoid: exactly 0 or 1 is reachable with a finite ``v``). The regularizer
``1 - |2h - 1|**beta`` is 0 only at ``h`` in {0, 1}; annealing ``beta`` from 20 to 2 first lets the rounding move
freely and then drives every variable to a hard choice. The deployed kernel always uses ``h >= 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

GAMMA, ZETA = -0.1, 1.1
BETA_START, BETA_END = 20.0, 2.0


def rectified_sigmoid(v: Any) -> Any:
    """``h(v)`` in [0, 1]."""
    return ops.clip(ops.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_logits(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Logits ``v`` with ``h(v)`` equal to the fractional part of ``kernel / scale``: the soft kernel starts at the
    float kernel (inside the grid's range)."""
    # the quotient exactly as the float32 forward pass computes it (subnormals flushed, as TensorFlow does), so
    # floor() agrees with the forward pass and h is the true remainder
    ratio = np.asarray(kernel, np.float32) / np.asarray(scale, np.float32)
    ratio = np.where(np.abs(ratio) < np.finfo(np.float32).tiny, 0.0, ratio).astype(np.float64)
    rest = ratio - np.floor(ratio)  # in [0, 1)
    return (-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).astype(np.float32)


def _grid(kernel: Any, scale: Any, zero_point: Any, h: Any, qmin: float, qmax: float) -> Any:
    q = ops.clip(ops.floor(kernel / scale) + h + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def soft_quantize(
    kernel: Any, scale: Any, zero_point: Any, logits: Any, qmin: float, qmax: float, hardness: Any = 0.0
) -> Any:
    """The kernel with learned soft rounding (differentiable w.r.t. ``logits`` and ``scale``). With ``hardness``
    1 the forward value uses the hard decision while the gradient still reaches the soft rounding."""
    h = rectified_sigmoid(logits)
    h = h + hardness * ops.stop_gradient(ops.cast(h >= 0.5, h.dtype) - h)
    return _grid(kernel, scale, zero_point, h, qmin, qmax)


def hard_quantize(kernel: Any, scale: Any, zero_point: Any, logits: Any, qmin: float, qmax: float) -> Any:
    """The kernel with the rounding decided (``h >= 0.5`` rounds up): exactly on the grid."""
    up = ops.cast(rectified_sigmoid(logits) >= 0.5, "float32")
    return _grid(kernel, scale, zero_point, up, qmin, qmax)


def rounding_penalty(logits: Any, beta: Any) -> Any:
    """Sum over the elements of ``1 - |2h - 1|**beta``: 0 when every variable is hard, at most one per element."""
    h = rectified_sigmoid(logits)
    return ops.sum(1.0 - ops.power(ops.abs(2.0 * h - 1.0), beta))


def beta_schedule(step: Any, total_steps: int, warmup: float) -> Any:
    """Temperature: ``BETA_START`` for the first ``warmup`` of the steps, then linear down to ``BETA_END``."""
    start = warmup * total_steps
    progress = ops.clip((ops.cast(step, "float32") - start) / max(total_steps - start, 1.0), 0.0, 1.0)
    return BETA_START + (BETA_END - BETA_START) * progress


def ramp(step: Any, total_steps: int, fraction: float) -> Any:
    """0 -> 1 linearly over the first ``fraction`` of the steps, then 1 (1 throughout when ``fraction`` is 0)."""
    if fraction <= 0:
        return ops.convert_to_tensor(1.0)
    return ops.clip((ops.cast(step, "float32") + 1.0) / max(fraction * total_steps, 1.0), 0.0, 1.0)


def hardness_schedule(step: Any, total_steps: int, phase: float) -> Any:
    """1 in the last ``phase`` of the steps (the forward pass then uses the hard decisions), else 0."""
    return ops.cast(ops.cast(step, "float32") >= (1.0 - phase) * total_steps, "float32")
