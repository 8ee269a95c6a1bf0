"""The pure fake-quant function: values on the grid, straight-through gradient inside the range."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.quantizers import fake_quant


@settings(max_examples=50, deadline=None)
@given(
    st.floats(1e-3, 10.0),
    st.integers(0, 255),
    st.integers(2, 8),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=50),
)
def test_output_on_grid_and_in_range(scale, zero_point, bits, values):
    qmin, qmax = 0, 2**bits - 1
    zero_point = min(zero_point, qmax)
    x = np.asarray(values, np.float32)
    y = np.asarray(fake_quant(x, np.float32(scale), np.float32(zero_point), qmin, qmax))
    levels = y / np.float32(scale) + zero_point
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() >= qmin - 1e-3 and levels.max() <= qmax + 1e-3
    inside = (x >= (qmin - zero_point) * scale) & (x <= (qmax - zero_point) * scale)
    assert np.all(np.abs(y - x)[inside] <= scale / 2 * (1 + 1e-4) + 1e-6)


def test_straight_through_gradient():
    x = tf.constant([-3.0, -0.26, 0.0, 0.3, 0.9, 5.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fake_quant(x, tf.constant(0.25), tf.constant(0.0), -4.0, 3.0)  # range [-1, 0.75]
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(y.numpy(), [-1.0, -0.25, 0.0, 0.25, 0.75, 0.75])


def test_per_channel_broadcast():
    kernel = np.array([[0.1, 1.0], [-0.2, -3.0]], np.float32)
    scale = np.array([[0.1, 1.0]], np.float32)
    out = np.asarray(fake_quant(kernel, scale, np.zeros_like(scale), -127.0, 127.0))
    np.testing.assert_allclose(out, [[0.1, 1.0], [-0.2, -3.0]], atol=1e-6)
