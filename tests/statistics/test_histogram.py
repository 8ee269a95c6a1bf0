"""Streaming histograms: widening is exact and the result does not depend on batch order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.statistics.histogram import merge_batch, widen


def _hist(values: np.ndarray, hist_range: float, bins: int = 64) -> np.ndarray:
    return np.histogram(values, bins=bins, range=(-hist_range, hist_range))[0].astype(np.float64)


def _pow2_range(values: np.ndarray) -> float:
    return float(2.0 ** np.ceil(np.log2(max(np.abs(values).max(), 2.0**-24))))


def test_widen_rebins_exactly():
    values = np.random.default_rng(0).uniform(-0.99, 0.99, 1000)
    np.testing.assert_array_equal(widen(_hist(values, 1.0), 2), _hist(values, 4.0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.01, 50.0), min_size=2, max_size=6), st.integers(0, 10_000))
def test_merge_is_order_independent(scales, seed):
    rng = np.random.default_rng(seed)
    batches = [rng.normal(0, s, 200) for s in scales]

    def run(order):
        stats = None
        for i in order:
            b = batches[i]
            hist_range = max(_pow2_range(b), stats.hist_range if stats else 0.0)
            stats = merge_batch(stats, _hist(b, hist_range), hist_range, b.min(), b.max(), b.size)
        return stats

    forward, backward = run(range(len(batches))), run(reversed(range(len(batches))))
    everything = np.concatenate(batches)
    np.testing.assert_array_equal(forward.counts, backward.counts)
    np.testing.assert_array_equal(forward.counts, _hist(everything, forward.hist_range))
    assert forward.min == everything.min() and forward.max == everything.max()
    assert forward.num_values == everything.size == forward.counts.sum()
