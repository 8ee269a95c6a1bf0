"""The learned-rounding math: start at the float kernel, end exactly on the grid, regularizer and schedules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kerasq.gptq.soft_rounding import (
    BETA_END,
    BETA_START,
    beta_schedule,
    hard_quantize,
    hardness_schedule,
    initial_logits,
    ramp,
    rectified_sigmoid,
    rounding_penalty,
    soft_quantize,
)

QMIN, QMAX = -8, 7  # 4-bit symmetric grid (full range: kerasq.params.integer_range)

kernels = arrays(np.float32, (6, 5), elements=st.floats(-0.8125, 0.8125, width=32))  # inside every grid below
scales = arrays(np.float32, (1, 5), elements=st.floats(0.125, 0.3125, width=32))


@settings(max_examples=50, deadline=None)
@given(kernels, scales)
def test_soft_rounding_starts_at_the_float_kernel(kernel, scale):
    logits = initial_logits(kernel, scale)
    soft = np.asarray(soft_quantize(kernel, scale, 0.0, logits, QMIN, QMAX))
    np.testing.assert_allclose(soft, kernel, atol=2e-5)


@settings(max_examples=50, deadline=None)
@given(kernels, scales, arrays(np.float32, (6, 5), elements=st.floats(-8, 8, width=32)))
def test_hard_rounding_is_on_the_grid_and_within_one_step(kernel, scale, logits):
    hard = np.asarray(hard_quantize(kernel, scale, 0.0, logits, QMIN, QMAX))
    q = hard / scale
    np.testing.assert_allclose(q, np.round(q), atol=1e-4)  # integer multiples of the scale
    assert np.all(np.abs(hard - kernel) <= scale * (1 + 1e-5))  # rounded down or up, never further
    assert q.min() >= QMIN - 1e-4 and q.max() <= QMAX + 1e-4


@settings(max_examples=50, deadline=None)
@given(kernels, scales)
def test_initial_hard_decision_is_rounding_to_nearest(kernel, scale):
    hard = np.asarray(hard_quantize(kernel, scale, 0.0, initial_logits(kernel, scale), QMIN, QMAX))
    ratio = kernel.astype(np.float64) / scale
    away_from_half = np.abs(ratio - np.floor(ratio) - 0.5) > 1e-3  # ties may go either way
    nearest = np.floor(ratio + 0.5) * scale
    np.testing.assert_allclose(hard[away_from_half], nearest[away_from_half], atol=1e-5)


def test_hardness_makes_the_soft_forward_equal_the_hard_one():
    rng = np.random.default_rng(0)
    kernel, scale = rng.uniform(-0.5, 0.5, (4, 3)).astype(np.float32), np.float32(0.1)
    logits = rng.normal(0, 2, (4, 3)).astype(np.float32)
    hard = hard_quantize(kernel, scale, 0.0, logits, QMIN, QMAX)
    np.testing.assert_allclose(soft_quantize(kernel, scale, 0.0, logits, QMIN, QMAX, 1.0), hard, atol=1e-6)
    assert np.abs(np.asarray(soft_quantize(kernel, scale, 0.0, logits, QMIN, QMAX)) - hard).max() > 1e-3


def test_penalty_is_zero_only_for_hard_variables():
    hard = np.array([-10.0, 10.0, -3.0, 3.0], np.float32)  # h exactly 0 or 1 (rectified sigmoid)
    assert float(rounding_penalty(hard, 2.0)) == 0.0
    half = np.zeros(4, np.float32)  # h = 0.5
    assert float(rounding_penalty(half, 2.0)) == 4.0
    assert np.all(np.isin(np.asarray(rectified_sigmoid(hard)), [0.0, 1.0]))


def test_temperature_and_ramp_schedules():
    assert float(beta_schedule(0, 100, 0.2)) == BETA_START
    assert float(beta_schedule(20, 100, 0.2)) == BETA_START
    assert abs(float(beta_schedule(60, 100, 0.2)) - (BETA_START + BETA_END) / 2) < 1e-5
    assert float(beta_schedule(100, 100, 0.2)) == BETA_END
    assert float(ramp(0, 100, 0.0)) == 1.0
    assert abs(float(ramp(0, 100, 0.5)) - 1 / 50) < 1e-6 and float(ramp(49, 100, 0.5)) == 1.0


def test_hardness_switches_on_for_the_last_phase():
    assert [float(hardness_schedule(s, 100, 0.25)) for s in (0, 74, 75, 99)] == [0.0, 0.0, 1.0, 1.0]
    assert float(hardness_schedule(99, 100, 0.0)) == 0.0
