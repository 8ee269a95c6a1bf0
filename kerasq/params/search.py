"""Threshold / range search: evaluate a grid of candidates for all channels at once, keep the best.

Symmetric grids try steps ``factor * s0`` around the no-clipping step ``s0 = max(max_pos / qmax,
max_neg / -qmin)`` (the extreme value exactly on its end level; below 8 bits ``qmin = -qmax - 1``, one more
level below zero than above it; factors from 1/32 to 1.2, since a slightly coarser step can round the bulk
better at low bits), then refine around the best; power-of-two grids try ``2**k`` from one power above the
no-clipping one down; uniform grids try shrunk ``(lo, hi)`` pairs. The no-clipping candidate comes first and
wins ties, so a search never does worse than max scaling on its own objective. Errors come from
``kerasq.params.error`` (in cache-sized blocks, ``kerasq.params.blocked_errors``): exact values for kernels,
histogram bins (integrated, not reduced to their centres) for activations.
"""

from __future__ import annotations

import numpy as np

from kerasq.config.enums import QuantizationErrorMethod as E
from kerasq.config.enums import QuantizationMethod as M
from kerasq.errors import ConfigError, DataError
from kerasq.params.blocked_errors import SearchValues
from kerasq.params.error_methods import ErrorMethodSpec, error_method_spec, usable_for_activations
from kerasq.quantizers.grid import (
    MIN_SCALE,
    QuantParams,
    integer_range,
    no_clipping_scale,
    symmetric_grid,
    uniform_grid,
)


def _factors(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Candidate step factors: 1 (no clipping) first, then the others, largest first."""
    rest = np.unique(np.concatenate([low, high]))[::-1]
    return np.concatenate([[1.0], rest[~np.isclose(rest, 1.0, rtol=0.0, atol=1e-12)]])


def _offsets(spread: float, steps: int) -> np.ndarray:
    """Relative refinements around a first choice: 0 (the choice itself) first."""
    offsets = np.linspace(-spread, spread, 2 * steps + 1)
    return np.concatenate([[0.0], offsets[offsets != 0.0]])


_WEIGHT_FACTORS = _factors(np.geomspace(1 / 32, 0.3, 8), np.linspace(0.3, 1.2, 46))
_WEIGHT_REFINE = _offsets(0.03, 6)  # +-3% in steps of 0.5% around the best coarse factor (0.02 apart)
_ACT_FACTORS = _factors(np.geomspace(2.0**-10, 0.3, 48), np.linspace(0.3, 1.2, 91))
_ACT_REFINE = _offsets(0.015, 3)
_POT_OFFSETS = np.concatenate([[0], [1], -np.arange(1, 12)])  # powers tried around the no-clipping one
_UNIFORM_WEIGHT_SHRINK = np.linspace(1.0, 0.4, 10)
_UNIFORM_ACT_SHRINK = np.unique(np.concatenate([np.geomspace(2.0**-8, 0.3, 12), np.linspace(0.3, 1.0, 22)]))[
    ::-1
]


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def _check_common(n_bits: int, l_p_value: float, error_method: E, method: M) -> None:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) or not 2 <= n_bits <= 16:
        raise ConfigError(f"n_bits must be an integer in 2..16, got {n_bits!r}.")
    if not (_finite_number(l_p_value) and l_p_value > 0):
        raise ConfigError(f"l_p_value must be a finite number > 0, got {l_p_value!r}.")
    error_method_spec(error_method)  # a ConfigError unless registered
    if not isinstance(method, M):
        raise ConfigError(
            f"method must be a QuantizationMethod (e.g. QuantizationMethod.SYMMETRIC), got {method!r}."
        )


def _channels_last(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """[C, n] view of ``x`` with the channel axes (C order) as rows."""
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, (*axes, *rest))
    channels = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return moved.reshape(channels, -1)


def _normalize_axes(channel_axis: int | tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    if channel_axis is None:
        return ()
    axes = (channel_axis,) if isinstance(channel_axis, (int, np.integer)) else channel_axis
    if not isinstance(axes, (tuple, list)) or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in axes
    ):
        raise ConfigError(f"channel_axis must be None, an axis or a tuple of axes, got {channel_axis!r}.")
    for a in axes:
        if not -ndim <= a < ndim:
            raise ConfigError(
                f"channel_axis {channel_axis!r} is out of range for a tensor of rank {ndim}; use axes in "
                f"{-ndim}..{ndim - 1}."
            )
    normalized = tuple(sorted(int(a) % ndim for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ConfigError(f"channel_axis {channel_axis!r} repeats an axis; give each axis once.")
    return normalized


def _best(errors: np.ndarray) -> np.ndarray:
    """Index of the smallest error per channel; ties go to the earliest (widest) candidate."""
    return np.argmin(np.where(np.isfinite(errors), errors, np.inf), axis=0)


def _errors(
    spec: ErrorMethodSpec,
    values: SearchValues,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
    p: float,
) -> np.ndarray:
    """The objective's error of each candidate grid [K, C]."""
    assert spec.errors is not None, "an objective without errors is not searched"
    return spec.errors(values, scale, zero_point, qmin, qmax, p)


def _pick(
    spec: ErrorMethodSpec, values: SearchValues, scale: np.ndarray, qmin: int, qmax: int, p: float
) -> np.ndarray:
    """The best of the candidate steps [K, C] per channel [C]."""
    errors = _errors(spec, values, scale, np.zeros_like(scale), qmin, qmax, p)
    return scale[_best(errors), np.arange(scale.shape[1])]


def _search_symmetric(
    values: SearchValues, neg: np.ndarray, pos: np.ndarray, *, n_bits: int, method: M, error_method: E, signed: bool,
    narrow_range: bool, p: float, factors: np.ndarray, refine: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int, int]:  # fmt: skip
    """(threshold, scale, qmin, qmax) per channel. ``neg`` / ``pos``: the magnitudes of each channel's most
    negative and most positive values; the candidates are steps relative to the no-clipping one."""
    qmin, qmax = integer_range(n_bits, signed, narrow_range)
    levels = 2 ** (n_bits - 1) if signed else 2**n_bits  # threshold = levels * scale
    base = no_clipping_scale(neg, pos, qmin, qmax)
    if method is M.POWER_OF_TWO:
        top = np.ceil(np.log2(base * levels))  # the smallest power-of-two threshold that clips nothing
        scale = 2.0 ** (top[None, :] + _POT_OFFSETS[:, None]) / levels
    else:
        scale = factors[:, None] * base[None, :]
    spec = error_method_spec(error_method)
    if spec.errors is None:
        chosen = scale[0]
    else:
        chosen = _pick(spec, values, np.maximum(scale, MIN_SCALE), qmin, qmax, p)
        if method is not M.POWER_OF_TWO and spec.refine:  # a finer look around the coarse choice
            fine = chosen[None, :] * (1.0 + refine[:, None])
            chosen = _pick(spec, values, np.maximum(fine, MIN_SCALE), qmin, qmax, p)
    threshold = np.maximum(chosen, MIN_SCALE) * levels
    scale, qmin, qmax = symmetric_grid(threshold, n_bits, signed, narrow_range)
    return threshold, scale, qmin, qmax


def _search_uniform(
    values: SearchValues, lo: np.ndarray, hi: np.ndarray, *, n_bits: int, error_method: E, p: float,
    shrink: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int, int]:  # fmt: skip
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    spec = error_method_spec(error_method)
    if spec.errors is None:
        scale, zero_point, qmin, qmax = uniform_grid(lo, hi, n_bits)
        return scale, zero_point, qmin, qmax
    # A zero end (ReLU outputs: lo = 0) is the same for every shrink: keep one, as the argmin would (the first).
    a, b = np.meshgrid(shrink if np.any(lo < 0) else shrink[:1], shrink if np.any(hi > 0) else shrink[:1],
                       indexing="ij")  # fmt: skip
    a, b = a.ravel(), b.ravel()
    scale, zero_point, qmin, qmax = uniform_grid(a[:, None] * lo[None], b[:, None] * hi[None], n_bits)
    best = _best(_errors(spec, values, scale, zero_point, qmin, qmax, p))
    cols = np.arange(scale.shape[1])
    return scale[best, cols], zero_point[best, cols], qmin, qmax


def search_weight_params(
    w: np.ndarray,
    *,
    n_bits: int,
    method: M,
    error_method: E,
    channel_axis: int | tuple[int, ...] | None,
    l_p_value: float = 2.0,
    narrow_range: bool = True,
    importance: np.ndarray | None = None,
) -> QuantParams:
    """Grid for a kernel, per channel along ``channel_axis`` (None = per tensor).

    ``importance`` (same shape as ``w``) weighs each element's error; it is required by HMSE.
    """
    _check_common(n_bits, l_p_value, error_method, method)
    w = np.asarray(w)
    if w.size == 0:
        raise DataError("weights are empty; nothing to quantize (pass a kernel with at least one value).")
    if not np.all(np.isfinite(w)):
        raise DataError("weights contain NaN/Inf values; fix the float model before quantizing.")
    if error_method_spec(error_method).needs_importance and importance is None:
        raise ConfigError(
            f"{error_method.name} needs per-weight Hessian scores (importance=...); use MSE without them."
        )
    axes = _normalize_axes(channel_axis, w.ndim)
    v = _channels_last(w.astype(np.float64), axes)
    # None: every weight counts the same (the fast path then skips multiplying by ones)
    weights = None if importance is None else _channels_last(np.asarray(importance, np.float64), axes)
    by_bins = error_method_spec(error_method).bin_centres
    values = SearchValues(*_channel_histograms(v)) if by_bins else SearchValues(v=v, w=weights)
    axis_out = None if not axes else (axes[0] if len(axes) == 1 else axes)
    if method is M.UNIFORM:
        scale, zero_point, qmin, qmax = _search_uniform(
            values, v.min(-1), v.max(-1), n_bits=n_bits, error_method=error_method, p=l_p_value,
            shrink=_UNIFORM_WEIGHT_SHRINK,
        )  # fmt: skip
        return _params(
            scale, zero_point, qmin, qmax, n_bits, method, True, axis_out, None, per_channel=bool(axes)
        )
    threshold, scale, qmin, qmax = _search_symmetric(
        values, np.maximum(-v.min(-1), 0.0), np.maximum(v.max(-1), 0.0), n_bits=n_bits, method=method,
        error_method=error_method, signed=True, narrow_range=narrow_range, p=l_p_value,
        factors=_WEIGHT_FACTORS, refine=_WEIGHT_REFINE,
    )  # fmt: skip
    return _params(
        scale, np.zeros_like(scale), qmin, qmax, n_bits, method, True, axis_out, threshold, bool(axes)
    )


def _channel_histograms(v: np.ndarray, bins: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel histograms (sorted centres, counts, bin widths) over [-max|v_c|, max|v_c|], vectorized."""
    c = v.shape[0]
    tmax = np.maximum(np.abs(v).max(-1, keepdims=True), MIN_SCALE)
    idx = np.clip(((v / tmax + 1.0) / 2.0 * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount((idx + np.arange(c)[:, None] * bins).ravel(), minlength=c * bins).reshape(c, bins)
    centres = (-1.0 + (np.arange(bins) + 0.5) * 2.0 / bins)[None, :] * tmax
    return centres, counts.astype(np.float64), 2.0 * tmax[:, 0] / bins


def histogram_bins(
    counts: np.ndarray, hist_range: float, observed_min: float, observed_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The occupied bins of a histogram over [-hist_range, hist_range] as value intervals ``(lower, upper,
    counts)``, each [1, m], for ``binned_lp_error``: bins cut to the observed range (the values at its ends are
    in the end bins), so a bin that starts at the observed maximum (values saturated there) is a point mass;
    and where the observed minimum is exactly 0 (a ReLU's output), the bin starting at 0 is a point mass at 0:
    its values are the exact zeros, which every grid represents without error."""
    n = counts.size
    width = 2.0 * hist_range / n
    edges = -hist_range + np.arange(n + 1) * width
    lower = np.clip(edges[:-1], observed_min, observed_max)
    upper = np.clip(edges[1:], observed_min, observed_max)
    if observed_min == 0.0:
        upper = np.where(edges[:-1] == 0.0, 0.0, upper)
    tiny = upper - lower < 1e-3 * width  # cut to a sliver: the interval would only add rounding noise
    middle = (lower + upper) / 2.0
    lower, upper = np.where(tiny, middle, lower), np.where(tiny, middle, upper)
    occupied = counts > 0
    return lower[None, occupied], upper[None, occupied], counts[None, occupied]


def search_activation_params(
    counts: np.ndarray,
    hist_range: float,
    *,
    observed_min: float,
    observed_max: float,
    n_bits: int,
    method: M,
    error_method: E,
    signed: bool | None = None,
    l_p_value: float = 2.0,
) -> QuantParams:
    """Per-tensor grid from a histogram (``counts`` over uniform bins spanning [-hist_range, hist_range]).

    ``signed=None`` picks signed iff negative values were observed (symmetric / power-of-two grids).
    """
    _check_common(n_bits, l_p_value, error_method, method)
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or counts.size < 2 or counts.size % 2:
        raise DataError(
            f"counts must be a 1-D histogram with an even number of bins, got shape {counts.shape}."
        )
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise DataError("counts must be finite and non-negative (a histogram of the observed values).")
    if not (_finite_number(hist_range) and hist_range > 0):
        raise DataError(f"hist_range must be a finite positive number, got {hist_range!r}.")
    if not (_finite_number(observed_min) and _finite_number(observed_max)) or observed_min > observed_max:
        raise DataError(
            "observed_min and observed_max must be finite with observed_min <= observed_max, "
            f"got [{observed_min}, {observed_max}]."
        )
    spec = error_method_spec(error_method)
    if spec.weights_only:
        usable = ", ".join(m.name for m in usable_for_activations(error_method))
        raise ConfigError(f"{error_method.name} applies to weights only; choose {usable} for activations.")
    observed_min, observed_max = float(observed_min), float(observed_max)
    if spec.bin_centres:
        n = counts.size
        width = 2.0 * hist_range / n
        values = SearchValues(
            v=(-hist_range + (np.arange(n) + 0.5) * width)[None, :], w=counts[None, :], bin_width=width
        )
    else:
        lower, upper, occupied = histogram_bins(counts, hist_range, observed_min, observed_max)
        values = SearchValues(v=lower, w=occupied, upper=upper)
    if method is M.UNIFORM:
        scale, zero_point, qmin, qmax = _search_uniform(
            values, np.array([observed_min]), np.array([observed_max]), n_bits=n_bits,
            error_method=error_method, p=l_p_value, shrink=_UNIFORM_ACT_SHRINK,
        )  # fmt: skip
        signed = bool(observed_min < 0)
        return _params(scale, zero_point, qmin, qmax, n_bits, method, signed, None, None, per_channel=False)
    is_signed = bool(observed_min < 0) if signed is None else bool(signed)
    neg = np.array([max(-observed_min, 0.0) if is_signed else 0.0])
    threshold, scale, qmin, qmax = _search_symmetric(
        values, neg, np.array([max(observed_max, 0.0)]), n_bits=n_bits, method=method,
        error_method=error_method, signed=is_signed, narrow_range=False, p=l_p_value, factors=_ACT_FACTORS,
        refine=_ACT_REFINE,
    )  # fmt: skip
    return _params(scale, np.zeros_like(scale), qmin, qmax, n_bits, method, is_signed, None, threshold, False)


def _params(
    scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, n_bits: int, method: M, signed: bool,
    channel_axis: int | tuple[int, ...] | None, threshold: np.ndarray | None, per_channel: bool,
) -> QuantParams:  # fmt: skip
    shape = (-1,) if per_channel else ()
    return QuantParams(
        scale=np.asarray(scale, np.float32).reshape(shape),
        zero_point=np.asarray(zero_point, np.int32).reshape(shape),
        qmin=int(qmin), qmax=int(qmax), n_bits=int(n_bits), method=method, signed=signed,
        channel_axis=channel_axis if per_channel else None,
        threshold=None if threshold is None else np.asarray(threshold, np.float32).reshape(shape),
    )  # fmt: skip


def fixed_activation_params(lo: float, hi: float, *, n_bits: int, method: M) -> QuantParams:
    """Grid covering a range the platform imposes (no search): uniform over [lo, hi], else symmetric."""
    _check_common(n_bits, 2.0, E.NOCLIPPING, method)
    if method is M.UNIFORM:
        scale, zero_point, qmin, qmax = uniform_grid(np.array([lo]), np.array([hi]), n_bits)
        return _params(scale, zero_point, qmin, qmax, n_bits, method, lo < 0, None, None, per_channel=False)
    signed = lo < 0
    tmax = max(abs(lo), abs(hi))
    threshold = np.array([2.0 ** np.ceil(np.log2(tmax)) if method is M.POWER_OF_TWO else tmax])
    scale, qmin, qmax = symmetric_grid(threshold, n_bits, signed, narrow_range=False)
    return _params(scale, np.zeros_like(scale), qmin, qmax, n_bits, method, signed, None, threshold, False)
