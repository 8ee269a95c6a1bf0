"""Fake quantization as pure functions of tensors, with straight-through gradients.

q = clip(round(x / scale) + zero_point, qmin, qmax);  x_hat = (q - zero_point) * scale.

Rounding passes its gradient straight through, so the gradient w.r.t. ``x`` is 1 inside the represented range
and 0 where the value is clipped, and a trainable ``scale`` gets the learned-step-size gradient
(``round(x/s) - x/s`` inside the range, the clip bound outside). The forward value is exactly the grid value.
"""

from __future__ import annotations

from typing import Any

from keras import ops


def round_ste(x: Any) -> Any:
    """``round(x)`` forward, identity backward. ``x + (round(x) - x)`` is exact in float for |x| < 2**23."""
    return x + ops.stop_gradient(ops.round(x) - x)


def grid_scale(scale: Any, method: str) -> Any:
    """The scale a quantizer uses: ``power_of_two`` grids snap to the nearest power of two (straight-through,
    so a trained scale stays a power of two); other grids use ``scale`` as it is."""
    if method != "power_of_two":
        return scale
    return ops.power(2.0, round_ste(ops.log2(scale)))


def fake_quant(x: Any, scale: Any, zero_point: Any, qmin: float, qmax: float) -> Any:
    """Quantize-dequantize ``x`` on the grid (scale, zero_point, [qmin, qmax]); scale broadcasts per channel."""
    q = ops.clip(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale
