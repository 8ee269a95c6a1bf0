"""Activations TFLite has no single integer kernel for, written as ops it does have.

Each lowering is a small function of TensorFlow ops ``f(x, mark)``; ``mark(t)`` says "the file stores ``t``
as an int8 tensor here". The ranges of the marked tensors are exact: the lowering is run once on every value
the (integer) input can take, which for an 8-bit input grid is at most 256 values, and each mark records the
range its tensor reaches. At export the same function runs again with each mark replaced by a fake-quant op
on that range, so the converter emits integer kernels for every step. Each mark is a requantization the Keras
model does not do; the exporter reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

Mark = Callable[[tf.Tensor], tf.Tensor]


def _hard_sigmoid(x: tf.Tensor, mark: Mark) -> tf.Tensor:
    # relu6(x + 3) / 6: one ADD with a fused RELU6, then one MUL by a constant
    return mark(tf.nn.relu6(x + 3.0)) * (1.0 / 6.0)


LOWERINGS: dict[str, Callable[[tf.Tensor, Mark], tf.Tensor]] = {"hard_sigmoid": _hard_sigmoid}
REASONS = {
    "hard_sigmoid": "TFLite has no integer hard-sigmoid kernel; relu6(x + 3) is stored as int8 before the /6",
}


def marked_ranges(kind: str, levels: np.ndarray) -> list[tuple[float, float]]:
    """The range of every marked tensor of ``kind``'s lowering, over all input values ``levels``."""
    ranges: list[tuple[float, float]] = []

    def record(t: tf.Tensor) -> tf.Tensor:
        values = t.numpy()
        ranges.append((min(float(values.min()), 0.0), max(float(values.max()), 0.0)))
        return t

    LOWERINGS[kind](tf.constant(levels, tf.float32), record)
    return ranges


class LoweredActivation(keras.layers.Layer):
    """Export-only: ``kind``'s lowering with each marked tensor fake-quantized on its exact 8-bit range."""

    def __init__(self, kind: str, levels: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.ranges = marked_ranges(kind, levels)

    def call(self, x: Any) -> Any:
        ranges = iter(self.ranges)

        def fake_quant(t: tf.Tensor) -> tf.Tensor:
            lo, hi = next(ranges)
            return tf.quantization.fake_quant_with_min_max_vars(t, lo, hi, num_bits=8)

        return LOWERINGS[self.kind](x, fake_quant)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
