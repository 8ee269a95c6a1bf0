"""Errors of every candidate grid of a search, computed in blocks small enough to stay in cache.

The search (``kerasq.params.search``) scores tens to hundreds of candidate grids per channel; their
temporaries [K, C, n] would not fit in cache at once, so ``lp_candidate_errors`` and ``kl_candidate_errors``
compute them in blocks of candidates (and of channels, for exact values) that do. Each block reduces whole rows, as one call on all candidates
would, so the errors are bit for bit those of ``kerasq.params.error``. Histogram searches skip candidates
whose clipped mass alone costs more than the best error found so far (``_bounded_binned_errors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kerasq.params.error import binned_lp_error, clipping_lower_bound, kl_error

_KL_ELEMENTS = 2**19  # candidates x bins per chunk of the KL divergence (a few MB per temporary)
_BLOCK_ELEMENTS = 2**17  # candidates x values per block of the Lp errors: 1 MB buffers stay in cache
_BOUND_MARGIN = 1e-9  # relative: a candidate whose error bound is this far above the best is skipped


@dataclass(frozen=True)
class SearchValues:
    """What candidates are evaluated on: exact values ``v`` [C, n] weighted by ``w`` (None: unit weights), or
    histogram bins weighted by their counts: for KL their centres ``v`` and widths ``bin_width``, for the Lp
    errors their ends ``[v, upper]``."""

    v: np.ndarray
    w: np.ndarray | None
    bin_width: np.ndarray | float | None = None
    upper: np.ndarray | None = None


def kl_candidate_errors(
    values: SearchValues, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int
) -> np.ndarray:
    """``kl_error`` of every candidate [K, C] on histogram ``values`` (centres and widths), in blocks of
    candidates (per-channel bin widths and whole-histogram bookkeeping: no blocks of channels)."""
    if values.bin_width is None:
        raise ValueError("the KL error needs histogram input (bin_width)")
    v = values.v
    w = np.ones_like(v) if values.w is None else values.w
    step = max(1, _KL_ELEMENTS // max(v.size, 1))
    parts = [
        kl_error(v, w, scale[i : i + step], zero_point[i : i + step], qmin, qmax, values.bin_width)
        for i in range(0, scale.shape[0], step)
    ]
    return np.concatenate(parts, axis=0)


def lp_candidate_errors(
    values: SearchValues, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int, power: float
) -> np.ndarray:
    """Mean ``|error|**power`` of every candidate [K, C], in blocks of candidates and channels small enough for
    the temporaries to stay in cache (whole rows of ``v``, so every sum is the one of a single call): of exact
    values (``lp_error``'s, bit for bit) or of histogram bins (``binned_lp_error``'s)."""
    v, w = values.v, values.w
    if values.upper is not None:  # histogram bins: one row of counts, blocks of candidates
        w = np.ones_like(v) if w is None else w
        step = max(1, _BLOCK_ELEMENTS // max(v.size, 1))
        # more than one block: the first block's best may rule the others out
        bound = (
            clipping_lower_bound(v, values.upper, w, scale, zero_point, qmin, qmax, power)
            if scale.shape[0] > step
            else None
        )
        if bound is not None:
            return _bounded_binned_errors(v, values.upper, w, scale, zero_point, qmin, qmax, power, bound)
        parts = [
            binned_lp_error(
                v, values.upper, w, scale[i : i + step], zero_point[i : i + step], qmin, qmax, power
            )
            for i in range(0, scale.shape[0], step)
        ]
        return np.concatenate(parts, axis=0)
    channels, n = v.shape
    rows = max(1, min(channels, _BLOCK_ELEMENTS // max(n, 1)))
    step = max(1, _BLOCK_ELEMENTS // (rows * max(n, 1)))
    errors = np.empty(scale.shape)
    for c in range(0, channels, rows):
        cols = slice(c, c + rows)
        for k in range(0, scale.shape[0], step):
            block = (slice(k, k + step), cols)
            errors[block] = lp_errors(v[cols], None if w is None else w[cols], scale[block], zero_point[block],
                                      qmin, qmax, power)  # fmt: skip
    return errors


def _bounded_binned_errors(
    lower: np.ndarray, upper: np.ndarray, w: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
    qmin: int, qmax: int, p: float, bound: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """``binned_lp_error`` of the candidates [K, 1] that can still be the best, +inf for the others.

    Candidates go in blocks in the order of their lower ``bound`` (``clipping_lower_bound``: the error of what
    they clip alone); a candidate whose bound exceeds the best error found so far cannot be chosen, nor tie with
    the choice, and is not evaluated. Most grids of a wide search clip far too much, so only a fraction is. The
    errors computed are those of one ``binned_lp_error`` call on all candidates, bit for bit (each candidate's
    error is a reduction over its own row), so the search's ``_best`` picks the same candidate."""
    errors = np.full(scale.shape, np.inf)
    step = max(1, _BLOCK_ELEMENTS // max(lower.size, 1))
    order = np.argsort(bound[:, 0], kind="stable")
    best = np.inf
    for i in range(0, order.size, step):
        block = order[i : i + step]
        block = block[bound[block, 0] <= best * (1.0 + _BOUND_MARGIN)]  # best = inf: all
        if block.size == 0:  # sorted by bound: no later candidate can do better either
            break
        errors[block] = binned_lp_error(lower, upper, w, scale[block], zero_point[block], qmin, qmax, p)
        found = errors[block, 0]
        found = found[np.isfinite(found)]
        best = min(best, float(found.min())) if found.size else best
    return errors


def lp_errors(
    v: np.ndarray, w: np.ndarray | None, scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
    p: float,
) -> np.ndarray:  # fmt: skip
    """``kerasq.params.error.lp_error`` (``w=None``: unit weights), value for value, computed in one buffer
    and without the steps that change no bit (adding a zero zero-point, ``abs`` before squaring, multiplying
    by ones): a third of its memory traffic, which is what the search spends its time on. The remaining
    operations run in the same order, so the errors are bit-identical."""
    s = scale[..., None]
    z = zero_point[..., None] if np.any(zero_point) else None
    err = np.divide(v, s)
    np.round(err, out=err)
    if z is not None:
        np.add(err, z, out=err)
    np.clip(err, qmin, qmax, out=err)
    if z is not None:
        np.subtract(err, z, out=err)
    np.multiply(err, s, out=err)  # x_hat
    np.subtract(v, err, out=err)
    if p == 2.0:
        np.square(err, out=err)  # what ``abs(...) ** 2.0`` computes
    else:
        np.abs(err, out=err)
        if p != 1.0:
            np.power(err, p, out=err)
    if w is None:
        return err.sum(-1) / float(v.shape[-1])
    np.multiply(err, w, out=err)
    return err.sum(-1) / np.maximum(w.sum(-1), 1e-30)
