"""Activations TFLite has no integer kernel for, written as one integer op it does have.

``hard_sigmoid(x) = clip(x / 6 + 1/2, 0, 1)`` is an affine map followed by a clip. The affine part is a 1x1
depthwise convolution with kernel 1/6 (exact in int8: level 127 of the per-channel scale (1/6)/127) and bias
1/2, so the file rounds once, onto the output grid, as the Keras model does. The clip is the output grid's own
range, which lies inside [0, 1] for every grid kerasq chooses for a hard-sigmoid output (its values are in
[0, 1]); the exporter checks that and reports it otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def _affine_per_channel(x: tf.Tensor, factor: float, offset: float) -> tf.Tensor:
    """``x * factor + offset`` as one DEPTHWISE_CONV_2D (1x1, per-channel int8 kernel at level 127)."""
    shape = x.shape
    channels = int(shape[-1])
    x4 = x if shape.rank == 4 else tf.reshape(x, [-1, 1, int(np.prod(shape[1:-1])), channels])
    step = np.full(channels, abs(factor) / 127.0, np.float32)
    kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        tf.constant(np.full((1, 1, 1, channels), factor, np.float32)),
        -127 * step,
        127 * step,
        narrow_range=True,
    )
    y = tf.raw_ops.DepthwiseConv2dNative(
        input=x4, filter=tf.reshape(kernel, [1, 1, channels, 1]), strides=[1, 1, 1, 1], padding="VALID"
    )
    y = y + tf.constant(np.full(channels, offset, np.float32))
    return y if shape.rank == 4 else tf.reshape(y, [-1, *shape[1:]])


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
