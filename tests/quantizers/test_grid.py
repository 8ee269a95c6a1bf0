"""The integer ranges of the grids and the levels an unsigned grid produces (``kerasq.quantizers.grid``)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.core import QuantizationMethod as M
from kerasq.quantizers.grid import INT8_WEIGHT_MIN, QuantParams, integer_range, no_clipping_scale

BITS = st.integers(2, 16)


@settings(max_examples=60, deadline=None)
@given(BITS, st.booleans())
def test_integer_ranges(bits, narrow):
    """Unsigned [0, 2**n - 1] (narrow or not); signed [-2**(n-1), 2**(n-1) - 1]; narrow signed drops -2**(n-1)
    only where it lies below the int8 weights' -127 (8 bits and up)."""
    assert integer_range(bits, signed=False, narrow_range=narrow) == (0, 2**bits - 1)
    assert integer_range(bits, signed=True) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    qmin, qmax = integer_range(bits, signed=True, narrow_range=True)
    assert qmax == 2 ** (bits - 1) - 1
    assert qmin == (-(2 ** (bits - 1)) + 1 if bits >= 8 else -(2 ** (bits - 1)))
    assert qmin >= INT8_WEIGHT_MIN or bits > 8


def test_integer_ranges_pinned():
    assert [integer_range(b, False) for b in (2, 4, 8, 16)] == [(0, 3), (0, 15), (0, 255), (0, 65535)]
    assert [integer_range(b, True, True) for b in (7, 8, 9)] == [(-64, 63), (-127, 127), (-255, 255)]


@settings(max_examples=30, deadline=None)
@given(BITS, st.floats(1e-2, 1e3))
def test_unsigned_grid_over_a_ramp_has_every_level(bits, top):
    """The unsigned n-bit grid that clips nothing of [0, R] turns a dense ramp over [0, R] into exactly 2**n
    distinct values, 0 and R among them, one step apart."""
    qmin, qmax = integer_range(bits, signed=False)
    scale = np.float32(no_clipping_scale(np.float64(0.0), np.float64(top), qmin, qmax))
    p = QuantParams(np.asarray(scale), np.asarray(0.0, np.float32), qmin, qmax, bits, M.SYMMETRIC, False)
    ramp = np.linspace(0.0, top, 4 * 2**bits + 1, dtype=np.float32)
    levels = np.unique(p.fake_quant(ramp))
    assert len(levels) == 2**bits, (len(levels), 2**bits)
    assert levels[0] == 0.0
    np.testing.assert_allclose(levels[-1], top, rtol=1e-5)
    np.testing.assert_allclose(np.diff(levels.astype(np.float64)), scale, rtol=1e-3, atol=2.5e-7 * top)
