"""Activations TFLite has no integer kernel for, written as one integer op it does have.

``hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)`` is an affine map followed by a clip. The affine part is a 1x1
depthwise convolution with kernel 1/6 (exact in int8: level 127 of the per-channel scale (1/6)/127) and bias
1/2, so the file rounds once, onto the output grid, as the Keras model does. The clip is the output grid's own
range, which lies inside [0, 1] for every grid kerasq chooses for a hard-sigmoid output (its values are in
[0, 1]); the exporter checks that and reports it otherwise.

A 2D average pool whose output grid differs from its input grid (imx500 gives pools grids of their own) is a
depthwise convolution with kernel 1/(kh * kw), exact in int8 the same way. TFLite's AVERAGE_POOL_2D keeps its
input scale, and the converter's requantization around it fails on some graphs ("violate the same scale
constraint": DenseNet's transitions); a DEPTHWISE_CONV_2D rescales onto the output grid itself, rounding once
as the Keras model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.layers import ShiftedActivation


def _affine_per_channel(x: tf.Tensor, factor: float, offset: float) -> tf.Tensor:
    """``x * factor + offset`` as one DEPTHWISE_CONV_2D (1x1, per-channel int8 kernel at level 127)."""
    shape = x.shape
    channels = int(shape[-1])
    x4 = x if shape.rank == 4 else tf.reshape(x, [-1, 1, int(np.prod(shape[1:-1])), channels])
    kernel = _exact_kernel(factor, (1, 1, 1, channels), channels)
    y = tf.raw_ops.DepthwiseConv2dNative(
        input=x4, filter=tf.reshape(kernel, [1, 1, channels, 1]), strides=[1, 1, 1, 1], padding="VALID"
    )
    y = y + tf.constant(np.full(channels, offset, np.float32))
    return y if shape.rank == 4 else tf.reshape(y, [-1, *shape[1:]])


def _exact_kernel(value: float, shape: tuple[int, ...], channels: int) -> tf.Tensor:
    """A constant kernel of ``value`` fake-quantized per channel so that it is int8 level 127, exactly."""
    step = np.full(channels, abs(value) / 127.0, np.float32)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        tf.constant(np.full(shape, value, np.float32)), -127 * step, 127 * step, narrow_range=True
    )


def average_pool_as_depthwise(x: tf.Tensor, pool_size: Sequence[int], strides: Sequence[int]) -> tf.Tensor:
    """A 'valid' 2D average pool (NHWC) as one DEPTHWISE_CONV_2D with the exact int8 kernel 1/(kh * kw)."""
    (kh, kw), channels = pool_size, int(x.shape[-1])
    kernel = _exact_kernel(1.0 / (kh * kw), (kh, kw, 1, channels), channels)
    return tf.raw_ops.DepthwiseConv2dNative(
        input=x, filter=tf.reshape(kernel, [kh, kw, channels, 1]), strides=[1, *strides, 1], padding="VALID"
    )


class AveragePoolAsDepthwise(keras.layers.Layer):
    """Export-only: a 'valid' AveragePooling2D computed by ``average_pool_as_depthwise``."""

    def __init__(self, pool_size: tuple[int, int], strides: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_size, self.strides = tuple(pool_size), tuple(strides)

    def call(self, x: Any) -> Any:
        return average_pool_as_depthwise(x, self.pool_size, self.strides)

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, h, w, c = input_shape
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        size = [None if d is None else (d - k) // s + 1 for d, k, s in ((h, kh, sh), (w, kw, sw))]
        return (n, *size, c)


class InverseSqrtOfGrid(keras.layers.Layer):
    """Export-only twin of ``kerasq.layers.InverseSqrt``: ``rsqrt(x)``, one int8 RSQRT.

    The Keras layer adds its epsilon first; an int8 tensor cannot carry that sum without a grid of its own, and
    on a grid it changes nothing except at 0, where both give the top of the output grid (rsqrt(epsilon) is far
    above any grid kerasq picks from calibration data)."""

    def call(self, x: Any) -> Any:
        return tf.math.rsqrt(x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class ShiftedActivationOnGrid(keras.layers.Layer):
    """Export-only twin of ``ShiftedActivation`` (shift-negative correction): ``act(x)``, its padding, ``+ shift``.

    The shifted tensor ``y = pad(act(x)) + s`` is stored on its output grid ``[lo, hi]``. The activation alone,
    ``y - s``, is put on the same grid moved down by ``s``: with ``s`` a whole number of steps (kerasq chooses it
    so), both grids have the same scale and their integer levels are the same numbers, only the zero points
    differ. TFLite then runs the activation's own int8 kernel onto the moved grid, pads with its zero point (the
    real value 0, which is ``s`` once shifted, as in Keras) and adds the constant ``s``, which maps each level
    onto itself: the file rounds once, where the Keras model does.
    """

    def __init__(self, source: ShiftedActivation, lo: float, hi: float, n_bits: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.lo, self.hi, self.n_bits = float(lo) - source.shift, float(hi) - source.shift, int(n_bits)

    def call(self, x: Any) -> Any:
        a = tf.quantization.fake_quant_with_min_max_vars(
            self.source.activate(x), self.lo, self.hi, num_bits=self.n_bits
        )
        if self.source.padding is not None:
            a = tf.pad(a, [(0, 0), *self.source.padding, (0, 0)])
        return a + tf.constant(self.source.shift, a.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.source.compute_output_shape(input_shape)


# Activations that are ``clip(factor * x + offset, low, high)``: kind -> (factor, offset, (low, high)).
AFFINE_THEN_CLIP: dict[str, tuple[float, float, tuple[float, float]]] = {
    "hard_sigmoid": (1 / 6, 0.5, (0.0, 1.0))
}


def _hard_sigmoid(x: tf.Tensor) -> tf.Tensor:
    factor, offset, _ = AFFINE_THEN_CLIP["hard_sigmoid"]
    return _affine_per_channel(x, factor, offset)


LOWERINGS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {"hard_sigmoid": _hard_sigmoid}
# The output range each lowering relies on its output grid to clip to.
CLIPPED_RANGE = {kind: clip for kind, (_, _, clip) in AFFINE_THEN_CLIP.items()}


class LoweredActivation(keras.layers.Layer):
    """Export-only: ``kind`` computed with ``LOWERINGS[kind]``."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind

    def call(self, x: Any) -> Any:
        return LOWERINGS[self.kind](x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
