"""Error measures between float values and their quantized versions, vectorized over candidate grids.

Values come as ``v`` [C, n] with non-negative weights ``w`` [C, n] (ones for raw weights, Hessian scores for
HMSE); grids as ``scale``/``zero_point`` [K, C]. Every function returns the weighted mean error per candidate
and channel, [K, C].

Histograms are not reduced to their bin centres: the Lp error of a bin is the exact integral of
``|x - x_hat|^p`` over the bin, values taken as uniform within it (``binned_lp_error``), so the error is a
smooth function of the grid at any ratio of step to bin width; a bin of zero width is a point mass (exact
zeros of a ReLU, values saturated at the observed maximum). KL compares the histogram with its quantized
version the same way, with each level's mass spread over the occupied part of its interval (``kl_error``).
"""

from __future__ import annotations

import math

import numpy as np

# relative floating-point slack of a clipping bound: far above the ~m * 2**-53 rounding of its sums and of a
# candidate's error, so a candidate is only skipped when its error provably exceeds the best one's
_BOUND_RELATIVE_SLACK = 1e-9
_KL_EPS = 1e-4  # probability given to an occupied bin the quantized distribution leaves empty (TensorRT's)


def quantize(v: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """x_hat for every candidate: v [C, n], scale/zero_point [K, C] -> [K, C, n]."""
    s, z = scale[..., None], zero_point[..., None]
    return (np.clip(np.round(v / s) + z, qmin, qmax) - z) * s


def lp_error(
    v: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, p: float
) -> np.ndarray:
    """Weighted mean |v - x_hat|**p over exact values ``v``."""
    err = np.abs(v - quantize(v, scale, zero_point, qmin, qmax)) ** p
    return (err * w).sum(-1) / np.maximum(w.sum(-1), 1e-30)


def _signed_power(r: np.ndarray, q: float) -> np.ndarray:
    """``sign(r) |r|^q`` (products for the common exponents)."""
    if q == 3.0:
        return r * r * r
    if q == 2.0:
        return r * np.abs(r)
    return np.sign(r) * np.abs(r) ** q


def _error_integral(t: np.ndarray, s: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: float):
    """``(periods, local)`` with ``integral_0^t |x - x_hat(x)|^p dx = (periods * 2 (s/2)^(p+1) + local) / (p+1)``
    on the grid of step ``s`` spanning ``[lo, hi]`` (multiples of ``s``): rounding error inside, the distance to
    the nearer end outside. Whole periods are counted apart so that differences between nearby points do not
    cancel large numbers."""
    c = np.clip(t, lo, hi)
    periods = np.round(c / s)
    local = _signed_power(c - periods * s, p + 1.0)  # rounding error in [-s/2, s/2]
    local += _signed_power(t - c, p + 1.0)  # beyond an end: the distance to it
    return periods, local


def binned_lp_error(
    lower: np.ndarray, upper: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    qmin: int, qmax: int, p: float,
) -> np.ndarray:  # fmt: skip
    """Weighted mean ``|x - x_hat|^p`` of values spread uniformly over the bins ``[lower, upper]`` [C, n]
    (weights ``w`` [C, n]: the counts), exactly: per bin the integral of the error over the bin divided by its
    width, and for a bin with ``lower == upper`` (a point mass) the error at that value."""
    s = scale[..., None]
    lo, hi = (qmin - zero_point[..., None]) * s, (qmax - zero_point[..., None]) * s
    width = upper - lower
    point = width <= 0.0
    per_width = np.where(point, 0.0, w / np.where(point, 1.0, width))  # a bin's count over its width
    k_a, g_a = _error_integral(lower, s, lo, hi, p)
    k_b, g_b = _error_integral(upper, s, lo, hi, p)
    integral = (k_b - k_a) * (2.0 * (s / 2.0) ** (p + 1.0)) + (g_b - g_a)
    total = (integral * per_width).sum(-1) / (p + 1.0)
    if np.any(point):
        cols = point[0] if point.shape[0] == 1 else slice(None)  # one histogram: just its point masses
        at = np.abs(lower[:, cols] - quantize(lower[:, cols], scale, zero_point, qmin, qmax)) ** p
        total += (at * np.where(point, w, 0.0)[:, cols]).sum(-1)
    return total / np.maximum(w.sum(-1), 1e-30)


def _tail_sums(
    lower: np.ndarray, upper: np.ndarray, density: np.ndarray, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Suffix sums over the bins [lower, upper] [m] (ascending, ``density``: count over width) of the moments
    ``density * (upper**k - lower**k)`` for k = 1..order, and of their magnitudes: [order, m+1] each (column j:
    the bins from j on)."""
    up, low = np.empty((order, upper.size)), np.empty((order, lower.size))
    up[0], low[0] = upper, lower
    for k in range(1, order):  # products, not a general power
        np.multiply(up[k - 1], upper, out=up[k])
        np.multiply(low[k - 1], lower, out=low[k])
    moments = density * (up - low)  # [order, m]

    def suffix(x: np.ndarray) -> np.ndarray:
        return np.concatenate([np.cumsum(x[:, ::-1], axis=1)[:, ::-1], np.zeros((order, 1))], axis=1)

    return suffix(moments), suffix(np.abs(moments))


def _tail_error(
    lower: np.ndarray, upper: np.ndarray, w: np.ndarray, end: np.ndarray, p: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(sum, slack)``: the Lp error mass ``sum_bins count/width * integral (x - end)^p dx`` over the values at
    or above ``end`` [K] (x_hat = end there): the bins lying wholly above from moments, the part of the bin
    straddling ``end`` directly; and a bound on its floating-point error. Point masses (zero width) are left
    out."""
    width = upper - lower
    density = np.where(width > 0.0, w / np.where(width > 0.0, width, 1.0), 0.0)
    sums, magnitudes = _tail_sums(lower, upper, density, p + 1)
    first = np.searchsorted(lower, end, side="left")  # the first bin starting at or above the end
    k = np.arange(1, p + 2)[:, None]
    binomial = np.array([math.comb(p + 1, int(i)) for i in k[:, 0]], np.float64)[:, None]
    coefficient = binomial * (-end[None]) ** (p + 1 - k)  # [p+1, K]
    total = (coefficient * sums[:, first]).sum(0) / (p + 1)
    slack = (np.abs(coefficient) * magnitudes[:, first]).sum(0) / (p + 1)
    straddling = np.maximum(first - 1, 0)  # the bin before starts below the end, and may reach beyond it
    beyond = np.where(first > 0, np.maximum(upper[straddling] - end, 0.0), 0.0)
    partial = density[straddling] * beyond ** (p + 1) / (p + 1)
    return total + partial, (slack + partial) * _BOUND_RELATIVE_SLACK


def clipping_lower_bound(
    lower: np.ndarray, upper: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    qmin: int, qmax: int, p: float,
) -> np.ndarray | None:  # fmt: skip
    """A lower bound [K, 1] on ``binned_lp_error`` of one histogram (``lower``/``upper``/``w`` [1, m]) for each
    candidate grid [K, 1]: the error of the values beyond the grid's ends alone, where ``x_hat`` is the end
    (every bin's error is non-negative, so the rest only adds), minus a generous bound on the floating-point
    error of both this sum and the candidate's own; from prefix sums of the bins' moments, O(K + m) instead
    of ``binned_lp_error``'s O(K m). None for a non-integer ``p`` (no polynomial moments)."""
    if not float(p).is_integer() or p < 1 or lower.shape[0] != 1 or scale.shape[1] != 1:
        return None
    p = int(p)
    s = scale[:, 0]
    lo, hi = (qmin - zero_point[:, 0]) * s, (qmax - zero_point[:, 0]) * s
    low, up, c = lower[0], upper[0], np.broadcast_to(w, lower.shape)[0]
    above, above_slack = _tail_error(low, up, c, hi, p)
    # below the low end: the mirror image (x -> -x) of the bins, above -lo
    below, below_slack = _tail_error(-up[::-1], -low[::-1], c[::-1], -lo, p)
    total_w = max(float(c.sum()), 1e-30)
    bound = (above + below - above_slack - below_slack) / total_w
    return bound[:, None]


def _gather(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table`` [K or 1, C, m] at integer positions ``index`` [K, C, j] of its last axis."""
    k, c, m = index.shape[0], index.shape[1], table.shape[-1]
    rows = np.arange(c) * m if table.shape[0] == 1 else np.arange(k * c).reshape(k, c) * m
    return table.reshape(-1)[index + rows[..., None]]


def _interpolate(table: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``table`` [1, C, n+1] (cumulative values at bin edges 0..n) at fractional edge positions [K, C, j],
    linearly within each bin and constant beyond the ends."""
    n = table.shape[-1] - 1
    position = np.clip(position, 0.0, float(n))
    i = np.minimum(np.floor(position).astype(np.int64), n - 1)
    left, right = _gather(table, i), _gather(table, i + 1)
    return left + (position - i) * (right - left)


def kl_error(
    v: np.ndarray,
    w: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    bin_width: np.ndarray | float,
) -> np.ndarray:
    """KL(P || Q) between a histogram (``v`` [C, n]: the centres of uniform bins of ``bin_width``, ascending;
    ``w``: counts) and its quantized version, as TensorRT's calibrator defines them, without bin aliasing.

    The grid's window is the union of its levels' rounding intervals. P is the histogram inside the window with
    the mass beyond each end folded onto the window's last bin width at that end (where an end falls within a
    bin then changes nothing); Q spreads the in-window mass of each level evenly over the occupied part (P > 0,
    so an empty bin holding only folded mass counts) of the level's interval. Values are uniform within bins,
    so a level covering 2.5 bins takes 2.5 bins' worth of mass and the divergence has no bin-aliasing jumps. Clipping heavy tails (edge bins of P far above Q) and grids
    too coarse for the bulk of the distribution both raise it. Q is smoothed as TensorRT does (an occupied bin
    Q leaves empty gets probability 1e-4). Ranges spanning fewer histogram bins than there are levels (capped
    at a quarter of the bins) cannot be compared this way and score +inf.
    """
    c, n = scale.shape[1], v.shape[-1]
    width = np.broadcast_to(np.asarray(bin_width, np.float64), (c,))[None, :, None]  # [1, C, 1]
    first = v[None, :, :1] - width / 2.0  # [1, C, 1]: the lower edge of bin 0
    edges = first + np.arange(n + 1) * width  # [1, C, n+1]
    counts = np.broadcast_to(w, (c, n))[None]
    cum = np.concatenate([np.zeros((1, c, 1)), np.cumsum(counts, axis=-1)], axis=-1)  # [1, C, n+1]
    total = cum[..., -1:]
    s, z = scale[..., None], zero_point[..., None]  # [K, C, 1]
    w_lo, w_hi = (qmin - z - 0.5) * s, (qmax - z + 0.5) * s
    inside, below, p_ref = _folded_reference(cum, first, width, edges, w_lo, w_hi)
    q = _spread_levels(cum, first, width, inside, p_ref, below, s, z, qmin, qmax)
    kl = _smoothed_kl(p_ref, q, total)
    min_bins = min(qmax - qmin + 1, n // 4)
    too_narrow = (w_hi - w_lo - s)[..., 0] < min_bins * width[..., 0]
    return np.where(too_narrow, np.inf, kl)


def _histogram_mass_below(cum: np.ndarray, first: np.ndarray, width: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The histogram's cumulative mass at points ``t``: ``cum`` [1, C, n+1] (its mass below each bin edge,
    the first edge at ``first``, bins ``width`` apart) interpolated, values taken as uniform within bins."""
    return _interpolate(cum, (t - first) / width)


def _folded_reference(
    cum: np.ndarray,
    first: np.ndarray,
    width: np.ndarray,
    edges: np.ndarray,
    w_lo: np.ndarray,
    w_hi: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KL's P for each candidate window [w_lo, w_hi]: ``(inside, below, p_ref)``, the bin edges clipped to the
    window [K, C, n+1], the mass below it [K, C, 1], and the in-window mass per bin [K, C, n] with the mass
    beyond either window end spread over the window's last bin width at that end (the bins it overlaps, in
    proportion), so that where an end falls within a bin changes nothing."""
    total = cum[..., -1:]
    inside = np.clip(edges, w_lo, w_hi)  # [K, C, n+1]
    below = _histogram_mass_below(cum, first, width, w_lo)
    above = total - _histogram_mass_below(cum, first, width, w_hi)
    ramp_lo = np.clip((inside - w_lo) / width, 0.0, 1.0)
    ramp_hi = np.clip((inside - w_hi) / width + 1.0, 0.0, 1.0)
    p_cum = _histogram_mass_below(cum, first, width, inside) - below + below * ramp_lo + above * ramp_hi
    return inside, below, np.maximum(np.diff(p_cum, axis=-1), 0.0)


def _occupied_length_below(
    t: np.ndarray, first: np.ndarray, width: np.ndarray, inside: np.ndarray, occupied: np.ndarray,
    occupied_cum: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Occupied length of the window below points ``t`` inside it: ``occupied_cum`` (that length at each
    clipped bin edge ``inside``) plus the occupied part of ``t``'s own bin below ``t``."""
    n = inside.shape[-1] - 1
    pos = (t - first) / width
    i = np.clip(np.floor(pos).astype(np.int64), 0, n - 1)
    left, right = _gather(inside, i), _gather(inside, i + 1)
    extra = _gather(occupied, i) * np.clip(t - left, 0.0, right - left)
    return _gather(occupied_cum, i) + extra


def _spread_levels(
    cum: np.ndarray, first: np.ndarray, width: np.ndarray, inside: np.ndarray, p_ref: np.ndarray,
    below: np.ndarray, s: np.ndarray, z: np.ndarray, qmin: int, qmax: int,
) -> np.ndarray:  # fmt: skip
    """KL's Q [K, C, n]: the in-window mass of each level spread evenly over the occupied part (``p_ref > 0``)
    of the level's rounding interval, per bin."""
    occupied = p_ref > 0
    length = occupied * np.diff(inside, axis=-1)  # occupied length of the window, per bin
    occupied_cum = np.concatenate([np.zeros((*inside.shape[:2], 1)), np.cumsum(length, axis=-1)], axis=-1)

    def occupied_below(t: np.ndarray) -> np.ndarray:
        return _occupied_length_below(t, first, width, inside, occupied, occupied_cum)

    # Q cumulative at each edge: the mass of the levels below plus the share of the edge's own level
    level = np.clip(np.round(inside / s), qmin - z, qmax - z)
    lo_l, hi_l = (level - 0.5) * s, (level + 0.5) * s
    start, stop = (
        _histogram_mass_below(cum, first, width, lo_l),
        _histogram_mass_below(cum, first, width, hi_l),
    )
    cs_lo = occupied_below(lo_l)
    support = occupied_below(hi_l) - cs_lo
    share = np.where(support > 0, (occupied_below(inside) - cs_lo) / np.where(support > 0, support, 1.0), 0.0)
    q_cum = start - below + (stop - start) * np.clip(share, 0.0, 1.0)
    return np.maximum(np.diff(q_cum, axis=-1), 0.0)


def _smoothed_kl(p_ref: np.ndarray, q: np.ndarray, total: np.ndarray) -> np.ndarray:
    """KL(P || Q) per candidate and channel [K, C] of the per-bin masses ``p_ref`` (of ``total``) and ``q``, Q
    smoothed as TensorRT does (an occupied bin Q leaves empty gets probability ``_KL_EPS``)."""
    p_norm = p_ref / np.maximum(total, 1e-30)
    q_norm = q / np.maximum(q.sum(-1, keepdims=True), 1e-30)
    q_norm = np.where((p_norm > 0) & (q_norm <= 0), _KL_EPS, q_norm)
    safe_p = np.where(p_norm > 0, p_norm, 1.0)
    return (p_norm * np.log(safe_p / np.where(p_norm > 0, q_norm, 1.0))).sum(-1)
