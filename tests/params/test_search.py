"""Threshold / range search: grid validity, error-method differences, per-channel layouts, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.core import QuantizationErrorMethod as E
from kerasq.core import QuantizationMethod as M
from kerasq.params import search_activation_params, search_weight_params


def _outlier_tensor(seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, 1.0, 20000)
    x[:20] = 12.0
    return x.astype(np.float32)


def _mse(x: np.ndarray, p) -> float:
    return float(np.mean((x - p.fake_quant(x)) ** 2))


def _histogram(x: np.ndarray, bins: int = 4096) -> tuple[np.ndarray, float]:
    r = float(2.0 ** np.ceil(np.log2(np.abs(x).max())))
    return np.histogram(x, bins=bins, range=(-r, r))[0].astype(np.float64), r


def test_outliers_separate_the_error_methods_on_weights():
    x = _outlier_tensor()
    found = {
        m: float(
            search_weight_params(
                x,
                n_bits=4,
                method=M.SYMMETRIC,
                error_method=m,
                channel_axis=None,
                l_p_value=4.0 if m is E.LP else 2.0,
            ).threshold
        )  # fmt: skip
        for m in (E.NOCLIPPING, E.MSE, E.MAE, E.LP, E.KL)
    }
    assert found[E.NOCLIPPING] == pytest.approx(12.0 * 8 / 7)  # the top level (7 steps) is the maximum
    assert found[E.MSE] < 0.5 * found[E.NOCLIPPING]
    assert found[E.MAE] < found[E.MSE] < found[E.LP]  # larger p weighs clipping more
    assert found[E.KL] < found[E.NOCLIPPING]
    assert len({round(v, 4) for v in found.values()}) == 5


def test_mse_search_beats_no_clipping():
    x = _outlier_tensor(1)
    mse = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=None)
    nc = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.NOCLIPPING, channel_axis=None)
    assert _mse(x, mse) < 0.5 * _mse(x, nc)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 16), st.sampled_from(list(M)), st.integers(0, 1000))
def test_weight_grid_properties(bits, method, seed):
    w = np.random.default_rng(seed).normal(0, 0.2, (3, 3, 4, 6)).astype(np.float32)
    p = search_weight_params(w, n_bits=bits, method=method, error_method=E.MSE, channel_axis=-1)
    assert p.scale.shape == (6,) and p.channel_axis == 3
    assert np.all(p.scale > 0)
    q = p.fake_quant(w)
    levels = q.astype(np.float64) / p.scale.reshape(1, 1, 1, 6) + p.zero_point.reshape(1, 1, 1, 6)
    tol = 1e-3 + 2.0**bits * 1e-7  # float32 resolution
    np.testing.assert_allclose(levels, np.round(levels), atol=tol)
    assert levels.min() >= p.qmin - tol and levels.max() <= p.qmax + tol
    if method is M.POWER_OF_TWO:
        np.testing.assert_array_equal(np.log2(p.threshold), np.round(np.log2(p.threshold)))
    if method is M.UNIFORM:
        assert np.all(p.range_min <= 0) and np.all(p.range_max >= 0)
    else:
        # int8 weights never use -128: narrow range from 8 bits up, the full range below
        assert p.qmin == -(2 ** (bits - 1)) + (bits >= 8)


def test_more_bits_less_error():
    x = _outlier_tensor(2)
    errors = [_mse(x, search_weight_params(x, n_bits=b, method=M.SYMMETRIC, error_method=E.MSE,
                                           channel_axis=None)) for b in range(2, 17)]  # fmt: skip
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))


@pytest.mark.parametrize(("shape", "axis", "channels"), [((3, 3, 8, 5), -1, 5), ((3, 3, 5, 8), -2, 5),
                                                         ((3, 3, 4, 2), (2, 3), 8)])  # fmt: skip
def test_channel_layouts(shape, axis, channels):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    p = search_weight_params(w, n_bits=8, method=M.SYMMETRIC, error_method=E.NOCLIPPING, channel_axis=axis)
    assert p.scale.shape == (channels,)
    axes = (axis,) if isinstance(axis, int) else axis
    moved = np.moveaxis(w, [a % w.ndim for a in axes], list(range(-len(axes), 0)))
    per_channel_max = np.abs(moved.reshape(-1, channels)).max(0)
    np.testing.assert_allclose(p.range_max, per_channel_max, rtol=1e-6)
    np.testing.assert_allclose(p.threshold, per_channel_max * 128 / 127, rtol=1e-6)
    # nothing is clipped: every value is within half a step of its level
    assert np.max(np.abs(p.fake_quant(w) - w)) <= p.scale.max() / 2 + 1e-6


def test_activation_search_matches_raw_data_search():
    x = np.maximum(_outlier_tensor(3), 0.0)
    counts, r = _histogram(x)
    from_hist = search_activation_params(counts, r, observed_min=float(x.min()), observed_max=float(x.max()),
                                         n_bits=4, method=M.SYMMETRIC, error_method=E.MSE)  # fmt: skip
    assert not from_hist.signed and from_hist.qmin == 0
    thresholds = np.linspace(0.5, 12.0, 400)
    raw_best = thresholds[np.argmin([np.mean((x - np.clip(np.round(x / (t / 16)), 0, 15) * (t / 16)) ** 2)
                                     for t in thresholds])]  # fmt: skip
    assert float(from_hist.threshold) == pytest.approx(raw_best, rel=0.05)


@pytest.mark.parametrize("method", [M.POWER_OF_TWO, M.SYMMETRIC, M.UNIFORM])
@pytest.mark.parametrize("error", [E.NOCLIPPING, E.MSE, E.MAE, E.LP, E.KL])
def test_activation_grid_is_valid(method, error):
    x = np.random.default_rng(4).normal(0.3, 1.0, 50000)
    counts, r = _histogram(x)
    p = search_activation_params(counts, r, observed_min=float(x.min()), observed_max=float(x.max()), n_bits=8,
                                 method=method, error_method=error, l_p_value=3.0)  # fmt: skip
    assert p.scale.shape == () and float(p.scale) > 0
    assert float(p.range_min) <= 0 <= float(p.range_max)
    assert float(p.range_max) <= x.max() * 2 + 1e-6
    if method is not M.UNIFORM:
        assert p.signed and p.qmin == -128
    if method is M.POWER_OF_TWO:
        assert float(np.log2(p.threshold)) == round(float(np.log2(p.threshold)))


def test_degenerate_inputs_keep_a_valid_grid():
    p = search_weight_params(
        np.zeros((3, 4)), n_bits=8, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=-1
    )
    assert np.all(p.scale > 0) and np.all(np.isfinite(p.scale))
    counts = np.zeros(64)
    counts[32] = 10
    q = search_activation_params(counts, 1.0, observed_min=0.0, observed_max=0.0, n_bits=8,
                                 method=M.UNIFORM, error_method=E.MSE)  # fmt: skip
    assert float(q.scale) > 0


def test_deterministic():
    x = _outlier_tensor(5)
    a = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.KL, channel_axis=None)
    b = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.KL, channel_axis=None)
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bits": 1}, "n_bits"),
        ({"n_bits": 17}, "n_bits"),
        ({"l_p_value": -1.0}, "l_p_value"),
        ({"channel_axis": 5}, "channel_axis"),
        ({"error_method": E.HMSE}, "HMSE"),
    ],
)
def test_bad_weight_arguments(kwargs, match):
    args = {"n_bits": 8, "method": M.SYMMETRIC, "error_method": E.MSE, "channel_axis": -1} | kwargs
    with pytest.raises(ValueError, match=match):
        search_weight_params(np.ones((2, 3)), **args)


def test_bad_weight_values():
    with pytest.raises(ValueError, match="NaN/Inf"):
        search_weight_params(np.array([1.0, np.nan]), n_bits=8, method=M.SYMMETRIC, error_method=E.MSE,
                             channel_axis=None)  # fmt: skip
    with pytest.raises(ValueError, match="empty"):
        search_weight_params(np.zeros(0), n_bits=8, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=None)


def test_bad_histograms():
    kw = {"observed_min": 0.0, "observed_max": 1.0, "n_bits": 8, "method": M.SYMMETRIC, "error_method": E.MSE}
    with pytest.raises(ValueError, match="even number of bins"):
        search_activation_params(np.ones(7), 1.0, **kw)
    with pytest.raises(ValueError, match="non-negative"):
        search_activation_params(-np.ones(8), 1.0, **kw)
    with pytest.raises(ValueError, match="hist_range"):
        search_activation_params(np.ones(8), 0.0, **kw)


def test_hmse_uses_importance():
    x = _outlier_tensor(6)
    importance = np.ones_like(x)
    importance[:20] = 1000.0  # the outliers matter: HMSE keeps them
    p = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.HMSE, channel_axis=None,
                             importance=importance)  # fmt: skip
    plain = search_weight_params(x, n_bits=4, method=M.SYMMETRIC, error_method=E.MSE, channel_axis=None)
    assert float(p.threshold) > 2 * float(plain.threshold)


@pytest.mark.parametrize(("p", "unit_weights"), [(2.0, True), (2.0, False), (1.0, True), (3.0, False)])
def test_blocked_in_place_errors_are_the_error_module_s_bit_for_bit(p, unit_weights):
    """The search's fast path (cache-sized blocks, one buffer, w=None for unit weights) computes exactly
    ``lp_error``, through the registered objective."""
    from kerasq.params.error import lp_error
    from kerasq.params.error_methods import ERROR_METHODS
    from kerasq.params.search import SearchValues

    rng = np.random.default_rng(7)
    v = rng.normal(0, 1, (40, 9000))  # several blocks of channels and of candidates
    w = np.ones_like(v) if unit_weights else rng.uniform(0.5, 2, v.shape)
    scale = rng.uniform(0.002, 0.05, (70, 40))
    method = {1.0: E.MAE, 2.0: E.MSE}.get(p, E.LP)
    expected = lp_error(v, w, scale, np.zeros_like(scale), -128, 127, p)
    got = ERROR_METHODS[method].errors(
        SearchValues(v, None if unit_weights else w), scale, np.zeros_like(scale), -128, 127, p
    )
    np.testing.assert_array_equal(got, expected)


def test_uniform_search_of_a_non_negative_tensor_is_the_full_grid_s_choice():
    """A ReLU output's low end is 0 for every shrink: one row of the (low, high) grid is searched, and the
    choice is the one the full grid's first minimum makes."""
    from kerasq.params.error import binned_lp_error
    from kerasq.params.search import _UNIFORM_ACT_SHRINK, histogram_bins
    from kerasq.quantizers.grid import uniform_grid

    x = np.maximum(np.random.default_rng(8).standard_t(4, 200000), 0.0)  # a long tail: clipping pays
    counts, r = _histogram(x)
    p = search_activation_params(counts, r, observed_min=0.0, observed_max=float(x.max()), n_bits=8,
                                 method=M.UNIFORM, error_method=E.MSE)  # fmt: skip
    a, b = (g.ravel() for g in np.meshgrid(_UNIFORM_ACT_SHRINK, _UNIFORM_ACT_SHRINK, indexing="ij"))
    scale, zero_point, qmin, qmax = uniform_grid(a[:, None] * 0.0, b[:, None] * float(x.max()), 8)
    lower, upper, occupied = histogram_bins(counts, r, 0.0, float(x.max()))
    errors = binned_lp_error(lower, upper, occupied, scale, zero_point, qmin, qmax, 2.0)
    best = int(np.argmin(errors[:, 0]))
    assert p.scale == np.float32(scale[best, 0]) and int(p.zero_point) == int(zero_point[best, 0])
    assert p.range_max < 0.95 * x.max()  # the tail is clipped


# -- skipping candidates whose clipping alone costs more than the best (issue 12): same choice, bit for bit ---


def _random_histogram(seed: int, relu: bool, saturate: bool) -> tuple[np.ndarray, float, float, float]:
    """counts over [-r, r], r, observed min and max: a heavy-tailed sample, with gaps (empty bins), optionally
    a ReLU's exact zeros and values saturated at the maximum."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, 30000) * rng.uniform(0.1, 10.0)
    if relu:
        x = np.maximum(x, 0.0)
    if saturate:
        x = np.minimum(x, np.quantile(x, 0.97))
    counts, r = _histogram(x, bins=int(rng.choice([256, 1024, 4096])))
    return counts, r, float(x.min()), float(x.max())


def _uniform_candidates(lo: float, hi: float, n_bits: int):
    from kerasq.params.search import _UNIFORM_ACT_SHRINK
    from kerasq.quantizers.grid import uniform_grid

    a, b = (g.ravel() for g in np.meshgrid(_UNIFORM_ACT_SHRINK, _UNIFORM_ACT_SHRINK, indexing="ij"))
    return uniform_grid(a[:, None] * min(lo, 0.0), b[:, None] * max(hi, 0.0), n_bits)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000), relu=st.booleans(), saturate=st.booleans(), n_bits=st.sampled_from([2, 4, 8]),
    p=st.sampled_from([1.0, 2.0, 3.0]),
)  # fmt: skip
def test_skipping_candidates_keeps_every_evaluated_error_and_the_choice(seed, relu, saturate, n_bits, p):
    """``lp_candidate_errors`` on histogram bins skips candidates by their clipping bound: the errors it computes are
    ``binned_lp_error``'s on all candidates at once, bit for bit, every skipped candidate is worse than the
    best, so the first minimum (the choice) is the same, whatever order the candidates come in."""
    from kerasq.params.blocked_errors import lp_candidate_errors
    from kerasq.params.error import binned_lp_error
    from kerasq.params.search import SearchValues, histogram_bins

    counts, r, lo, hi = _random_histogram(seed, relu, saturate)
    lower, upper, occupied = histogram_bins(counts, r, lo, hi)
    scale, zero_point, qmin, qmax = _uniform_candidates(lo, hi, n_bits)
    shuffled = np.random.default_rng(seed).permutation(len(scale))  # the order candidates come in is no hint
    scale, zero_point = scale[shuffled], zero_point[shuffled]
    reference = binned_lp_error(lower, upper, occupied, scale, zero_point, qmin, qmax, p)
    got = lp_candidate_errors(SearchValues(lower, occupied, upper=upper), scale, zero_point, qmin, qmax, p)
    done = np.isfinite(got[:, 0])
    np.testing.assert_array_equal(got[done], reference[done])
    assert np.all(reference[~done, 0] > reference[:, 0].min())
    assert int(np.argmin(got[:, 0])) == int(np.argmin(reference[:, 0]))


def test_most_candidates_of_a_wide_uniform_search_are_skipped():
    from kerasq.params.blocked_errors import lp_candidate_errors
    from kerasq.params.search import SearchValues, histogram_bins

    counts, r, lo, hi = _random_histogram(0, relu=False, saturate=False)  # 4096 bins, 663 occupied
    lower, upper, occupied = histogram_bins(counts, r, lo, hi)
    scale, zero_point, qmin, qmax = _uniform_candidates(lo, hi, 8)
    got = lp_candidate_errors(SearchValues(lower, occupied, upper=upper), scale, zero_point, qmin, qmax, 2.0)
    assert np.isfinite(got).mean() < 0.3


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    relu=st.booleans(),
    saturate=st.booleans(),
    p=st.sampled_from([1.0, 2.0, 3.0]),
)
def test_clipping_bound_is_below_every_candidate_s_error(seed, relu, saturate, p):
    from kerasq.params.error import binned_lp_error, clipping_lower_bound
    from kerasq.params.search import histogram_bins

    counts, r, lo, hi = _random_histogram(seed, relu, saturate)
    lower, upper, occupied = histogram_bins(counts, r, lo, hi)
    scale, zero_point, qmin, qmax = _uniform_candidates(lo, hi, 8)
    bound = clipping_lower_bound(lower, upper, occupied, scale, zero_point, qmin, qmax, p)
    error = binned_lp_error(lower, upper, occupied, scale, zero_point, qmin, qmax, p)
    assert np.all(bound <= error)
    # not a trivial bound: most of the error of the narrowest grid (the last: both ends shrunk most)
    assert bound[-1, 0] > 0.5 * error[-1, 0]


def test_clipping_bound_is_the_exact_error_of_bins_beyond_both_ends():
    """Bins [-3, -2] (2 values) and [2, 3] (1 value) on the grid {-1, 0, 1}: every value is clipped, the mean
    squared error is (2 * 7/3 + 7/3) / 3 = 7/3, the integral of (x - 1)**2 over [2, 3]."""
    from kerasq.params.error import binned_lp_error, clipping_lower_bound

    lower, upper, w = np.array([[-3.0, 2.0]]), np.array([[-2.0, 3.0]]), np.array([[2.0, 1.0]])
    scale, zero_point = np.array([[1.0], [4.0]]), np.array([[1.0], [1.0]])  # the second grid clips nothing
    bound = clipping_lower_bound(lower, upper, w, scale, zero_point, 0, 2, 2.0)
    assert bound[0, 0] == pytest.approx(7.0 / 3.0, rel=1e-8) and bound[1, 0] <= 0.0
    assert binned_lp_error(lower, upper, w, scale, zero_point, 0, 2, 2.0)[0, 0] == pytest.approx(7.0 / 3.0)
    assert clipping_lower_bound(lower, upper, w, scale, zero_point, 0, 2, 2.5) is None  # no moments
