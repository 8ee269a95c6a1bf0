"""Fake quantization as pure functions of tensors, with straight-through gradients.

q = clip(round(x / scale) + zero_point, qmin, qmax);  x_hat = (q - zero_point) * scale.

Rounding passes its gradient straight through, so the gradient w.r.t. ``x`` is 1 inside the represented range
and 0 where the value is clipped, and a trainable ``scale`` gets the learned-step-size gradient
(``round(x/s) - x/s`` inside the range, the clip bound outside). The forward value is exactly the grid value.

Ties (``x / scale`` exactly halfway between two levels) go to the even level, except on a quantizer with
``rounding=HALF_AWAY_FROM_STORED_ZERO``: there they go away from the zero of the integer tensor a runtime stores
the grid in (``stored_zero``), which is what TFLite's int8 / int16 average pooling does with its integer means.
Ties are rare after a convolution but structural after an average pool: a 2x2 mean is a multiple of 1/4.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from kerasq.quantizers.grid import HALF_AWAY_FROM_STORED_ZERO, HALF_TO_EVEN, TIE_TOLERANCE, stored_zero


def round_ste(x: Any) -> Any:
    """``round(x)`` forward, identity backward. ``x + (round(x) - x)`` is exact in float for |x| < 2**23."""
    return x + ops.stop_gradient(ops.round(x) - x)


def round_half_away_ste(x: Any, origin: float) -> Any:
    """``x`` rounded to the nearest integer, ties away from ``origin``; identity backward."""
    v = x - origin
    rounded = ops.sign(v) * ops.floor(ops.abs(v) + (0.5 + TIE_TOLERANCE)) + origin
    return x + ops.stop_gradient(rounded - x)


def grid_scale(scale: Any, method: str) -> Any:
    """The scale a quantizer uses: ``power_of_two`` grids snap to the nearest power of two (straight-through,
    so a trained scale stays a power of two); other grids use ``scale`` as it is."""
    if method != "power_of_two":
        return scale
    return ops.power(2.0, round_ste(ops.log2(scale)))


def fake_quant(
    x: Any,
    scale: Any,
    zero_point: Any,
    qmin: float,
    qmax: float,
    rounding: str = HALF_TO_EVEN,
    n_bits: int = 8,
) -> Any:
    """Quantize-dequantize ``x`` on the grid (scale, zero_point, [qmin, qmax]); scale broadcasts per channel.
    ``rounding`` says where ties go (see the module docstring; ``n_bits`` locates the stored zero)."""
    if rounding == HALF_AWAY_FROM_STORED_ZERO:
        q = round_half_away_ste(x / scale + zero_point, stored_zero(int(qmin), int(qmax), n_bits))
    else:
        q = round_ste(x / scale) + zero_point
    q = ops.clip(q, qmin, qmax)
    return (q - zero_point) * scale
