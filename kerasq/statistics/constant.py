"""Tensors that took one value over all the calibration data: their grids cannot hold anything else.

A layer whose output is constant on the calibration data (every input constant, or a ReLU that is never
active) gets a grid spanning that value alone; any other value it meets at inference is clipped to it. One
warning lists them (the first few by name), since one degenerate input makes every later tensor constant.
"""

from __future__ import annotations

from collections.abc import Mapping

from kerasq.statistics.histogram import TensorStats

SHOWN = 3


def is_constant(stats: TensorStats) -> bool:
    """Every observed value equal (up to float32 rounding)."""
    return stats.max - stats.min <= 1e-7 * max(abs(stats.min), abs(stats.max))


def constant_tensor_warning(stats: Mapping[str, TensorStats]) -> str | None:
    """One message naming the layers (``stats``: layer name -> its output's statistics) whose output never
    varied, or None when every one varied."""
    constant = {name: s.min for name, s in stats.items() if is_constant(s)}
    if not constant:
        return None
    shown = [f"{name!r} (always {value:g})" for name, value in list(constant.items())[:SHOWN]]
    more = f" and {len(constant) - SHOWN} more" if len(constant) > SHOWN else ""
    return (
        f"{len(constant)} quantized tensor(s) never varied over the representative data: the outputs of "
        f"{', '.join(shown)}{more}. Their grids span that one value, narrower than any other data they will see "
        "at inference, which is clipped to it. Calibrate on data that varies like real inputs; if the data is "
        "real, look for layers that are never active (e.g. a ReLU whose input is always negative)."
    )
