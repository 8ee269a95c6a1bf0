"""The 8-bit grid of a tensor inside a fused chain: the observed range, clipped only where the consumer is flat."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.params.fused_search import FLAT_BEYOND, fused_tensor_params
from kerasq.statistics.histogram import TensorStats


def _stats(lo: float, hi: float) -> TensorStats:
    return TensorStats(counts=np.ones(64), hist_range=32.0, min=lo, max=hi, num_values=1000)


def _range(p) -> tuple[float, float]:
    return float((p.qmin - p.zero_point) * p.scale), float((p.qmax - p.zero_point) * p.scale)


def test_no_consumer_bound_keeps_the_whole_range():
    p = fused_tensor_params(_stats(-10.0, 16.0), "add")
    lo, hi = _range(p)
    step = float(p.scale)  # the zero point is rounded to an integer: the ends move by less than a step
    assert lo <= -10.0 + step and hi >= 16.0 - step and step == pytest.approx(26.0 / 255, rel=1e-3)


@pytest.mark.parametrize("consumer", sorted(FLAT_BEYOND))
def test_a_flat_consumer_clips_where_its_output_no_longer_changes(consumer):
    low, high = FLAT_BEYOND[consumer]
    p = fused_tensor_params(_stats(-10.0, 16.0), consumer)
    lo, hi = _range(p)
    step = float(p.scale)
    assert lo >= max(-10.0, low) - step and hi <= min(16.0, high) + step
    assert step <= (min(16.0, high) - max(-10.0, low)) / 255 * 1.01  # the levels go to the values that matter


def test_hard_swish_grid_is_finer_than_the_observed_range_grid():
    plain, clipped = (
        fused_tensor_params(_stats(-10.0, 16.0)),
        fused_tensor_params(_stats(-10.0, 16.0), "hard_swish"),
    )
    assert float(clipped.scale) == pytest.approx(float(plain.scale) * 19.0 / 26.0, rel=0.02)


def test_a_range_entirely_on_the_flat_side_is_kept():
    p = fused_tensor_params(_stats(-9.0, -4.0), "hard_swish")
    assert _range(p)[0] <= -9.0 + float(p.scale)
