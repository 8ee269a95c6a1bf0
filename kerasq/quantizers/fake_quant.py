"""Fake quantization as a pure function of tensors, with a straight-through gradient.

q = clip(round(x / scale) + zero_point, qmin, qmax);  x_hat = (q - zero_point) * scale.
The gradient w.r.t. x is 1 inside the represented range and 0 where the value is clipped.
"""

from __future__ import annotations

from typing import Any

from keras import ops


def fake_quant(x: Any, scale: Any, zero_point: Any, qmin: float, qmax: float) -> Any:
    """Quantize-dequantize ``x`` on the grid (scale, zero_point, [qmin, qmax]); scale broadcasts per channel."""
    lo = (qmin - zero_point) * scale
    hi = (qmax - zero_point) * scale
    clipped = ops.minimum(ops.maximum(x, lo), hi)
    q = ops.clip(ops.round(x / scale) + zero_point, qmin, qmax)
    dequantized = (q - zero_point) * scale
    return clipped + ops.stop_gradient(dequantized - clipped)
