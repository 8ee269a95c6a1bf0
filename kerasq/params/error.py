"""Error measures between float values and their quantized versions, vectorized over candidate grids.

Values come as ``v`` [C, n] with non-negative weights ``w`` [C, n] (ones for raw weights, bin counts for
histograms, Hessian scores for HMSE); grids as ``scale``/``zero_point`` [K, C]. Every function returns the
weighted mean error per candidate and channel, [K, C].
"""

from __future__ import annotations

import numpy as np

from kerasq.core.enums import QuantizationErrorMethod as E


def quantize(v: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """x_hat for every candidate: v [C, n], scale/zero_point [K, C] -> [K, C, n]."""
    s, z = scale[..., None], zero_point[..., None]
    return (np.clip(np.round(v / s) + z, qmin, qmax) - z) * s


def lp_error(
    v: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, p: float,
    bin_width: float | None = None,
) -> np.ndarray:  # fmt: skip
    """Weighted mean |v - x_hat|**p.

    With ``bin_width`` (histogram input), rounding error inside the range is modelled as uniform noise
    (E|e|^p = (s/2)^p / (p+1)) wherever the grid is finer than 4 bins, so bin centres never alias with the grid.
    """
    x_hat = quantize(v, scale, zero_point, qmin, qmax)
    err = np.abs(v - x_hat) ** p
    if bin_width is not None and np.ndim(bin_width) == 0:
        s = scale[..., None]
        lo, hi = (qmin - zero_point[..., None]) * s, (qmax - zero_point[..., None]) * s
        inside = (v >= lo) & (v <= hi)
        noise = (s / 2.0) ** p / (p + 1.0)
        fine = s < 4.0 * bin_width
        err = np.where(inside & fine, noise, err)
    return (err * w).sum(-1) / np.maximum(w.sum(-1), 1e-30)


def kl_error(
    v: np.ndarray,
    w: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    bin_width: np.ndarray | float,
) -> np.ndarray:
    """KL(P || Q) between the histogram P (``v`` sorted bin centres, ``w`` counts) and its quantized version.

    As in TensorRT's calibrator: the reference P moves clipped mass onto the edge bins of the represented
    range; Q takes only the in-range mass and spreads each quantization level's mass evenly over the non-empty
    bins mapping to it. Clipping heavy tails (edge bins of P far above Q) and grids too coarse for the bulk of
    the distribution both raise the divergence. Ranges spanning fewer histogram bins than there are levels
    (capped at a quarter of the bins) cannot be compared this way and score +inf.
    """
    k, c = scale.shape
    n = v.shape[-1]
    s, z = scale[..., None], zero_point[..., None]
    level = np.clip(np.round(v / s) + z, qmin, qmax)  # [K, C, n]
    lo, hi = (qmin - z) * s, (qmax - z) * s
    inside = (v >= lo) & (v <= hi)
    first = np.argmax(inside, axis=-1)
    last = n - 1 - np.argmax(inside[..., ::-1], axis=-1)
    idx = np.broadcast_to(np.arange(n), level.shape)
    target = np.where(v < lo, first[..., None], np.where(v > hi, last[..., None], idx))
    rows = np.arange(k * c).reshape(k, c, 1) * n
    weights = np.broadcast_to(w, level.shape)
    p_ref = np.bincount((target + rows).ravel(), weights.ravel(), minlength=k * c * n).reshape(k, c, n)
    p_in = np.where(inside, weights, 0.0)
    # Runs of equal levels are contiguous because bin centres are sorted.
    new_run = np.concatenate([np.ones((k, c, 1), bool), np.diff(level, axis=-1) != 0], axis=-1)
    run = np.cumsum(new_run, axis=-1) - 1 + rows
    mass = np.bincount(run.ravel(), p_in.ravel(), minlength=k * c * n)
    nonzero = np.bincount(run.ravel(), (p_in > 0).ravel().astype(np.float64), minlength=k * c * n)
    q = np.where(p_in > 0, mass[run] / np.maximum(nonzero[run], 1.0), 0.0)
    p_norm = p_ref / np.maximum(p_ref.sum(-1, keepdims=True), 1e-30)
    q_norm = q / np.maximum(q.sum(-1, keepdims=True), 1e-30)
    eps = 1e-10
    kl = np.where(p_norm > 0, p_norm * np.log((p_norm + eps) / (q_norm + eps)), 0.0).sum(-1)
    min_bins = min(qmax - qmin + 1, n // 4)
    too_narrow = (hi - lo)[..., 0] < min_bins * np.broadcast_to(bin_width, (c,))[None, :]
    return np.where(too_narrow, np.inf, kl)


def candidate_errors(
    method: E, v: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
    l_p_value: float, bin_width: np.ndarray | float | None = None,
) -> np.ndarray:  # fmt: skip
    """Error of each candidate grid [K, C] under ``method`` (NOCLIPPING is handled by the caller).

    ``bin_width`` marks ``v`` as histogram bin centres (scalar, or one width per channel); KL needs it.
    """
    if method is E.KL:
        if bin_width is None:
            raise ValueError("the KL error needs histogram input (bin_width)")
        return kl_error(v, w, scale, zero_point, qmin, qmax, bin_width)
    p = {E.MSE: 2.0, E.HMSE: 2.0, E.MAE: 1.0, E.LP: float(l_p_value)}[method]
    return lp_error(v, w, scale, zero_point, qmin, qmax, p, bin_width)
