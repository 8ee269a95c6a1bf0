"""Export-only twins of ``ActivationQuantizer``: TensorFlow fake-quant ops the TFLite converter reads as int8
(or int16) tensors with exactly kerasq's scales and zero points.

A grid is stored in the integer tensor that holds it with its own scale (``storage_range``); ranges sit on
their grids and include zero, so TensorFlow's range nudging changes nothing.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.quantizers import ActivationQuantizer


def grid_values(q: ActivationQuantizer) -> np.ndarray:
    """Every value ``q``'s grid can take (float32, ascending)."""
    scale, zero_point = q.grid()
    return ((np.arange(q.qmin, q.qmax + 1) - zero_point) * scale).astype(np.float32)


def storage_range(q: ActivationQuantizer) -> tuple[float, float, int]:
    """(lo, hi, bits) of the integer tensor that holds ``q``'s grid with ``q``'s own scale.

    16-bit grids are int16 tensors. A grid of at most 8 bits lives in an int8 tensor with the same scale: its
    levels are 256 consecutive steps that contain the grid's ``qmax - qmin + 1`` levels (and zero).
    """
    scale, zero_point = q.grid()
    if q.n_bits > 8:
        return (q.qmin - zero_point) * scale, (q.qmax - zero_point) * scale, q.n_bits
    low = q.qmin - (255 - (q.qmax - q.qmin)) // 2  # the grid sits in the middle of the int8 levels
    return (low - zero_point) * scale, (low + 255 - zero_point) * scale, 8


class TFFakeQuantActivation(keras.layers.Layer):
    """Export-only twin of ``ActivationQuantizer`` using TensorFlow's fake-quant op.

    A grid narrower than 8 bits is stored in int8 with its own scale and clipped to its levels by a
    MINIMUM / MAXIMUM pair on the same scale, so the integer file computes exactly what the Keras layer does.
    """

    def __init__(self, source: ActivationQuantizer, name: str | None = None, **kwargs: Any) -> None:
        # Short names: they end up in every tensor name of the flatbuffer.
        super().__init__(name=name or source.name.replace("_activation_quantizer", "_aq"), **kwargs)
        self.lo, self.hi, self.n_bits = storage_range(source)
        values = grid_values(source)
        self.clip = (float(values[0]), float(values[-1])) if source.n_bits < 8 else None

    def _fake_quant(self, x: Any) -> Any:
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=self.n_bits)

    def call(self, x: Any) -> Any:
        x = self._fake_quant(x)
        if self.clip is not None:
            x = self._fake_quant(tf.clip_by_value(x, *self.clip))
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class TFFakeQuantRange(keras.layers.Layer):
    """Export-only: an 8-bit fake quant on a fixed range (a tensor the Keras model does not quantize)."""

    def __init__(self, lo: float, hi: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, x: Any) -> Any:
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape
