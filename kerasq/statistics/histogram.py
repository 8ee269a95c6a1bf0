"""Streaming histograms on symmetric power-of-two ranges.

Each tensor keeps ``N`` counts over [-R, R], R a power of two. When a batch exceeds R, R doubles (as often
as needed) and old counts merge pairwise into the central half: exact, because old bin edges are a subset
of the new ones. So a single pass over the data suffices, whatever order the batches come in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TensorStats:
    """Summary of all values one tensor took over the representative data."""

    counts: np.ndarray  # float64 [N], uniform bins over [-hist_range, hist_range]
    hist_range: float
    min: float
    max: float
    num_values: int

    def bin_centers(self) -> np.ndarray:
        n = self.counts.size
        width = 2.0 * self.hist_range / n
        return -self.hist_range + (np.arange(n) + 0.5) * width


def widen(counts: np.ndarray, doublings: int) -> np.ndarray:
    """Counts over [-R, R] re-binned onto [-R * 2**doublings, R * 2**doublings] with the same bin count."""
    n = counts.size
    for _ in range(min(doublings, int(np.log2(n)) + 1)):
        merged = counts.reshape(n // 2, 2).sum(axis=1)
        counts = np.concatenate([np.zeros(n // 4), merged, np.zeros(n // 4)])
    return counts


def merge_batch(
    stats: TensorStats | None, counts: np.ndarray, hist_range: float, lo: float, hi: float, size: int
) -> TensorStats:
    """Fold one batch's histogram (over [-hist_range, hist_range], hist_range >= stats.hist_range) into stats."""
    counts = counts.astype(np.float64)
    if stats is None:
        return TensorStats(
            counts=counts, hist_range=float(hist_range), min=float(lo), max=float(hi), num_values=int(size)
        )
    doublings = round(np.log2(hist_range / stats.hist_range))
    if doublings < 0:
        raise ValueError("batch histogram range must not be smaller than the running range")
    return TensorStats(
        counts=widen(stats.counts, doublings) + counts,
        hist_range=float(hist_range),
        min=min(stats.min, float(lo)),
        max=max(stats.max, float(hi)),
        num_values=stats.num_values + int(size),
    )
