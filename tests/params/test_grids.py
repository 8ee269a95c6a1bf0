"""The low-bit grids themselves: no-clipping candidates, the exact histogram error model, KL without artefacts,
and HMSE's use of Hessian scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.core import QuantizationErrorMethod as E
from kerasq.core import QuantizationMethod as M
from kerasq.params import search_activation_params, search_weight_params
from kerasq.params.error import binned_lp_error, kl_error
from kerasq.params.search import _ACT_FACTORS, histogram_bins
from kerasq.quantizers.grid import integer_range, no_clipping_scale


def _histogram(x: np.ndarray, bins: int = 4096) -> tuple[np.ndarray, float]:
    """As the statistics pass builds it: ``bins`` counts over [-R, R], R the power of two above max |x|."""
    r = float(2.0 ** np.ceil(np.log2(np.abs(x).max())))
    return np.histogram(x, bins=bins, range=(-r, r))[0].astype(np.float64), r


def _per_channel_mse(w: np.ndarray, q: np.ndarray) -> np.ndarray:
    return ((w - q) ** 2).reshape(-1, w.shape[-2] * w.shape[-1]).mean(0)


# -- defect 1: the no-clipping grid is a candidate, and no-clipping clips nothing --------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_no_clipping_keeps_the_extreme_weight_exactly(bits):
    """The step is the smallest that clips nothing, max(max_pos / qmax, max_neg / -qmin): the extreme that
    sets it lies exactly on its end level (the top one, or the bottom one of the full range below 8 bits)."""
    w = np.random.default_rng(bits).normal(0, 0.3, (3, 3, 8, 6)).astype(np.float32)
    w[0, 0, 0, 0], w[0, 0, 0, 1] = -1.5, 1.5  # channel 0's step is set by its most negative weight, 1's not
    p = search_weight_params(w, n_bits=bits, method=M.SYMMETRIC, error_method=E.NOCLIPPING, channel_axis=-1)
    q = p.fake_quant(w)
    flat_w, flat_q = w.reshape(-1, 6), q.reshape(-1, 6)
    pos, neg = flat_w.max(0), -flat_w.min(0)
    np.testing.assert_allclose(p.scale, np.maximum(pos / p.qmax, neg / -p.qmin), rtol=1e-6)
    on_top = pos / p.qmax >= neg / -p.qmin
    # (the largest |w| was kept at 0.875 of itself at 4 bits before the no-clipping fix)
    kept = np.where(on_top, flat_q.max(0), -flat_q.min(0))
    np.testing.assert_allclose(kept, np.where(on_top, pos, neg), rtol=1e-6)
    assert not on_top[0] and on_top[1]
    assert np.all(np.abs(flat_w - flat_q) <= p.scale / 2 * (1 + 1e-5))  # no value is clipped


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_power_of_two_no_clipping_is_the_smallest_power_that_clips_nothing(bits):
    w = np.random.default_rng(10 + bits).normal(0, 0.3, (64, 5))
    p = search_weight_params(
        w, n_bits=bits, method=M.POWER_OF_TWO, error_method=E.NOCLIPPING, channel_axis=-1
    )
    qmin, qmax = (-127, 127) if bits == 8 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)  # full range below 8
    assert (p.qmin, p.qmax) == (qmin, qmax)
    pos, neg = w.max(0), -w.min(0)
    assert np.all(p.range_max >= pos * (1 - 1e-6)) and np.all(-p.range_min >= neg * (1 - 1e-6))
    assert np.all((p.range_max / 2 < pos) | (-p.range_min / 2 < neg))  # half the threshold would clip
    np.testing.assert_array_equal(np.log2(p.threshold), np.round(np.log2(p.threshold)))
    assert np.all(p.range_max == p.threshold / 2 ** (bits - 1) * qmax)
    assert np.all(p.range_min == p.threshold / 2 ** (bits - 1) * qmin)  # -threshold itself below 8 bits


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("low", [-3.0, 0.0])
def test_activation_no_clipping_reaches_the_observed_extremes(bits, low):
    x = np.random.default_rng(0).uniform(low, 5.0, 20000)
    x[:2] = low, 5.0
    counts, r = _histogram(x)
    p = search_activation_params(counts, r, observed_min=low, observed_max=5.0, n_bits=bits,
                                 method=M.SYMMETRIC, error_method=E.NOCLIPPING)  # fmt: skip
    assert float(p.range_max) == pytest.approx(5.0, rel=1e-6)
    assert float(p.range_min) <= low
    assert np.max(np.abs(p.fake_quant(x) - x)) <= float(p.scale) / 2 * (1 + 1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), bits=st.sampled_from([2, 3, 4, 8]), method=st.sampled_from([E.MSE, E.MAE]))
def test_search_on_depthwise_kernels_is_never_worse_than_max_scaling(seed, bits, method):
    """3x3 depthwise kernels: 9 values per channel. Plain max scaling (the smallest step that clips nothing,
    max(max_pos / qmax, max_neg / -qmin)) is a candidate, so the searched grid's error is at most its error,
    channel by channel (it was 2.5x at 8 bits)."""
    w = np.random.default_rng(seed).normal(0, 0.5, (3, 3, 32, 1)).astype(np.float32)
    p = search_weight_params(w, n_bits=bits, method=M.SYMMETRIC, error_method=method, channel_axis=(2, 3))
    flat = w.reshape(9, 32)
    step = np.maximum(flat.max(0) / p.qmax, -flat.min(0) / -p.qmin)
    plain = np.clip(np.round(w / step[:, None]), p.qmin, p.qmax) * step[:, None]
    power = 2 if method is E.MSE else 1
    searched = (np.abs(w - p.fake_quant(w)) ** power).reshape(9, 32).mean(0)
    reference = (np.abs(w - plain) ** power).reshape(9, 32).mean(0)
    assert np.all(searched <= reference * (1 + 1e-4) + 1e-12)
    assert searched.mean() < reference.mean() or bits == 2  # and better on the whole, but at 2 bits


def test_steps_above_the_no_clipping_one_are_searched():
    """Values on the multiples of 0.36 and a maximum of 1: the 3-bit grid of step 0.36 (top level 1.08, above
    the maximum) beats the max-scaled one (step 1/3); the search must be able to go above it."""
    w = np.concatenate([np.full(10, 0.36), np.full(10, -0.72), [1.0]])
    p = search_weight_params(w, n_bits=3, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=None)
    assert 0.35 < float(p.scale) < 0.37
    plain = float(np.mean((w - np.round(w * 3) / 3) ** 2))
    assert _mse(w, p) < 0.5 * plain


# -- defect 2: the histogram error is the integral over each bin; zeros are a point mass --------------------------


def _relu_like(n: int = 200000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0, 1, n))
    x[: n // 2] = 0.0  # half the values are exact zeros
    return x


@pytest.mark.parametrize("bits", [4, 8])
def test_histogram_error_is_the_sample_error_for_every_candidate(bits):
    x = _relu_like()
    counts, r = _histogram(x)
    lower, upper, occupied = histogram_bins(counts, r, 0.0, float(x.max()))
    scale = _ACT_FACTORS[:, None] * no_clipping_scale(0.0, x.max(), 0, 2**bits - 1)
    qmax = 2**bits - 1
    model = binned_lp_error(lower, upper, occupied, scale, np.zeros_like(scale), 0, qmax, 2.0)[:, 0]
    true = np.array([np.mean((x - np.clip(np.round(x / s), 0, qmax) * s) ** 2) for s in scale[:, 0]])
    np.testing.assert_allclose(model, true, rtol=0.03)


def test_histogram_search_lands_on_the_true_mse_optimum():
    """A maximum just above a power of two (4.003) puts the optimum (3.83) below half the histogram range (8),
    where the old model charged the zeros rounding noise and jumped: it chose 4.003 (MSE +6%)."""
    x = np.abs(np.random.default_rng(1).normal(0, 1, 200000))
    x *= 4.2 / x.max()
    x[:100000] = 0.0  # half exact zeros
    counts, r = _histogram(x)
    p = search_activation_params(counts, r, observed_min=0.0, observed_max=float(x.max()), n_bits=8,
                                 method=M.SYMMETRIC, error_method=E.MSE)  # fmt: skip
    thresholds = np.linspace(0.5, 1.2, 1401) * x.max()
    errors = [np.mean((x - np.clip(np.round(x / (t / 256)), 0, 255) * (t / 256)) ** 2) for t in thresholds]
    assert float(p.threshold) == pytest.approx(thresholds[int(np.argmin(errors))], rel=0.01)
    assert _mse(x, p) <= 1.005 * min(errors)


def _mse(x: np.ndarray, p) -> float:
    return float(np.mean((x - p.fake_quant(x)) ** 2))


def test_histogram_error_is_the_sample_error_at_any_ratio_of_step_to_bin_width():
    """No switch of model at some ratio of step to bin width (there was one at 4 bins): from half a bin to
    16 bins per step, the histogram's error is the samples' error."""
    x = np.random.default_rng(2).normal(0, 1, 100000)
    counts, r = _histogram(x)
    lower, upper, occupied = histogram_bins(counts, r, float(x.min()), float(x.max()))
    scale = np.geomspace(0.5, 16, 200)[:, None] * (2 * r / counts.size)
    qmin, qmax = -(2**15), 2**15 - 1  # enough levels that rounding, not clipping, makes the error
    model = binned_lp_error(lower, upper, occupied, scale, np.zeros_like(scale), qmin, qmax, 2.0)[:, 0]
    true = np.array([np.mean((x - np.clip(np.round(x / s), qmin, qmax) * s) ** 2) for s in scale[:, 0]])
    np.testing.assert_allclose(model, true, rtol=0.01)


def test_point_masses_are_charged_their_own_error():
    lower = upper = np.array([[0.0, 1.0, 2.6]])
    w = np.array([[5.0, 1.0, 1.0]])
    e = binned_lp_error(lower, upper, w, np.array([[1.0]]), np.array([[0.0]]), 0, 2, 2.0)
    assert float(e[0, 0]) == pytest.approx((0.0 + 0.0 + 0.6**2) / 7)  # 2.6 is clipped to 2


# -- defect 7: KL without empty edge bins or bin aliasing ------------------------------------------------------


def _swish(n: int, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).normal(0, 1, n)
    return z / (1 + np.exp(-z))


@pytest.mark.parametrize("n", [200000, 20000])
def test_kl_objective_has_no_isolated_spikes(n):
    x = _swish(n)
    counts, r = _histogram(x)
    width = 2 * r / counts.size
    centres = (-r + (np.arange(counts.size) + 0.5) * width)[None]
    factors = np.sort(_ACT_FACTORS[_ACT_FACTORS >= 0.3])
    scale = factors[:, None] * no_clipping_scale(-x.min(), x.max(), -128, 127)
    kl = kl_error(centres, counts[None], scale, np.zeros_like(scale), -128, 127, width)[:, 0]
    assert np.all(np.isfinite(kl))
    above_both = kl[1:-1] / np.maximum(kl[:-2], kl[2:])
    assert above_both.max() < 1.2  # was 1.6 (200k samples) and 3.5 (20k): an edge bin left empty in Q


def test_kl_threshold_is_close_to_mse_s_on_swish_outputs():
    x = _swish(200000, seed=1)
    counts, r = _histogram(x)
    found = {
        m: search_activation_params(
            counts,
            r,
            observed_min=float(x.min()),
            observed_max=float(x.max()),
            n_bits=8,
            method=M.SYMMETRIC,
            error_method=m,
        )  # fmt: skip
        for m in (E.KL, E.MSE)
    }
    assert float(found[E.KL].range_max) > 0.6 * x.max()
    assert _mse(x, found[E.KL]) < 2.0 * _mse(x, found[E.MSE])


def test_kl_gives_an_empty_edge_bin_that_receives_clipped_mass_its_level_s_share():
    """Values fill bins 0..43 (100 each, bin width 1); 20 lie far beyond. On the unsigned 4-bit grid of step 3
    the window is [-1.5, 46.5]: levels 0..14 hold uniform data (Q = P), the top level [43.5, 46.5] holds 50
    values on [43.5, 44) and P's folded mass on the window's last bin width [45.5, 46.5] (10 in bins 45 and
    46). Q spreads the level's 50 over its occupied length 0.5 + 1 + 0.5 (bin 44 is empty; bin 45 counts
    whole): 12.5 to bin 43, 25 to bin 45, 12.5 to bin 46. An empty bin left at Q = 0 would cost about 17 p."""
    counts = np.zeros(256)
    counts[128:172] = 100.0
    counts[200] = 20.0
    width = 1.0 / 128
    centres = (-1 + (np.arange(256) + 0.5) * width)[None]
    scale = np.array([[3 * width]])
    kl = float(kl_error(centres, counts[None], scale, np.zeros_like(scale), 0, 15, np.array([width]))[0, 0])
    p, q = (
        np.array([100.0] * 43 + [100.0, 10.0, 10.0]) / 4420,
        np.array([100.0] * 43 + [62.5, 25.0, 12.5]) / 4400,
    )
    assert kl == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-9)


# -- HMSE: the Hessian scores decide which weights the grid serves -----------------------------------------------


def _small_and_large(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.05, 2000), rng.choice([-1.0, 1.0], 40) * rng.uniform(0.8, 1, 40)])


def test_hmse_shrinks_the_grid_when_the_small_weights_matter():
    w = _small_and_large()
    importance = np.where(np.abs(w) < 0.5, 1000.0, 1.0)
    hmse = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.HMSE, channel_axis=None,
                                importance=importance)  # fmt: skip
    mse = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=None)
    assert float(hmse.threshold) < 0.5 * float(mse.threshold)
    small = np.abs(w) < 0.5
    assert _mse(w[small], hmse) < 0.5 * _mse(w[small], mse)


@pytest.mark.parametrize("level", [1.0, 1e-3, 37.0])
def test_hmse_with_uniform_scores_is_mse(level):
    w = np.random.default_rng(3).normal(0, 0.2, (3, 3, 16, 8))
    hmse = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.HMSE, channel_axis=-1,
                                importance=np.full(w.shape, level))  # fmt: skip
    mse = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=-1)
    np.testing.assert_array_equal(hmse.scale, mse.scale)


# -- full range below 8 bits: int8 weights never use -128, so only 8-bit grids drop their lowest level ---


@pytest.mark.parametrize(
    ("bits", "signed", "narrow", "expected"),
    [
        (2, True, True, (-2, 1)), (3, True, True, (-4, 3)), (4, True, True, (-8, 7)),
        (7, True, True, (-64, 63)), (8, True, True, (-127, 127)), (16, True, True, (-32767, 32767)),
        (4, True, False, (-8, 7)), (8, True, False, (-128, 127)), (4, False, True, (0, 15)),
    ],
)  # fmt: skip
def test_integer_range_drops_only_the_level_int8_weights_cannot_hold(bits, signed, narrow, expected):
    assert integer_range(bits, signed, narrow_range=narrow) == expected


@pytest.mark.parametrize("method", [M.SYMMETRIC, M.POWER_OF_TWO])
def test_a_2_bit_kernel_uses_its_4_levels(method):
    w = np.random.default_rng(3).normal(0, 0.2, (3, 3, 16, 8)).astype(np.float32)
    p = search_weight_params(w, n_bits=2, method=method, error_method=E.MSE, channel_axis=-1)
    levels = np.round(p.fake_quant(w) / p.scale).reshape(-1, 8)
    assert (p.qmin, p.qmax) == (-2, 1)
    for c in range(8):  # every channel: -2, -1, 0 and 1 (3 levels, [-1, 1], before)
        np.testing.assert_array_equal(np.unique(levels[:, c]), [-2, -1, 0, 1])


def _best_narrow_mse(flat: np.ndarray, qmax: int) -> np.ndarray:
    """Per channel [C] of ``flat`` [n, C]: the least MSE over 400 steps of a grid [-qmax, qmax], brute force."""
    steps = np.linspace(0.2, 1.2, 400)[:, None] * np.abs(flat).max(0)[None, :] / qmax  # [K, C]
    q = np.clip(np.round(flat[None] / steps[:, None]), -qmax, qmax) * steps[:, None]
    return ((flat[None] - q) ** 2).mean(1).min(0)


def test_4_bit_weights_on_16_levels_beat_the_best_15_level_grid():
    """MCT's 4-bit grid has 16 levels; the narrow one kerasq used (15, [-7, 7]) costs error at any step."""
    w = np.random.default_rng(5).normal(0, 0.3, (3, 3, 32, 16)).astype(np.float32)
    p = search_weight_params(w, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=-1)
    flat = w.reshape(-1, 16).astype(np.float64)
    searched = ((flat - p.fake_quant(w).reshape(-1, 16)) ** 2).mean(0)
    narrow = _best_narrow_mse(flat, 7)
    assert searched.mean() < 0.93 * narrow.mean(), (searched.mean(), narrow.mean())
    assert np.mean(searched < narrow) >= 0.75  # channel by channel too, but where the two are within 0.1%
