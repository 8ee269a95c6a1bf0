"""``QuantParams``: one quantization grid (per tensor or per channel) and its numpy fake-quant; ``KernelGrid``: the
serializable description a ``QuantizeWrapper`` keeps of each kernel's grid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from kerasq.config.enums import QuantizationMethod
from kerasq.errors import ConfigError

MIN_SCALE = 2.0**-24  # floor that keeps degenerate (all-zero) tensors on a valid grid

# Where ties (a value exactly halfway between two levels) go: to the even level, or away from the level that is 0
# in the integer tensor a runtime stores the grid in (TFLite's int8 / int16 average pooling rounds its integer
# means so). Ties are rare after a convolution but structural after an average pool (a 2x2 mean is a multiple
# of 1/4).
HALF_TO_EVEN = "half_to_even"
HALF_AWAY_FROM_STORED_ZERO = "half_away_from_stored_zero"
ROUNDINGS = (HALF_TO_EVEN, HALF_AWAY_FROM_STORED_ZERO)
# An integer mean of n values is a multiple of 1/n; float32 arithmetic puts it within ~1e-4 of that at 8 bits,
# so values this close to a half are ties (exact for windows of up to ~500 values).
TIE_TOLERANCE = 2.0**-10


def stored_zero(qmin: int, qmax: int, n_bits: int) -> int:
    """The level of the integer grid [qmin, qmax] that is 0 in the tensor the export stores it in: int16 for
    16-bit grids; for grids of at most 8 bits int8, with the grid's levels centred in its 256 levels (the
    convention of ``kerasq.export.int8_graph.storage_range``)."""
    if n_bits > 8:
        return qmin + 2 ** (n_bits - 1)
    return qmin - (255 - (qmax - qmin)) // 2 + 128


def round_levels(v: np.ndarray, rounding: str, origin: float) -> np.ndarray:
    """``v`` (in grid levels) to the nearest integer, ties as ``rounding`` says (numpy)."""
    if rounding == HALF_TO_EVEN:
        return np.round(v)
    d = v - origin
    return np.sign(d) * np.floor(np.abs(d) + (0.5 + TIE_TOLERANCE)) + origin


# The most negative level a TFLite int8 weight may take: -128 is never used (symmetric int8 kernels).
INT8_WEIGHT_MIN = -127


def integer_range(n_bits: int, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """(qmin, qmax) of a b-bit grid: the full two's-complement range [-2**(b-1), 2**(b-1) - 1] when signed.

    ``narrow_range``: the grid's integers are stored as int8 weights, which never use -128; it drops the most
    negative level where that level lies below ``INT8_WEIGHT_MIN``, i.e. from 8 bits up ([-127, 127] at 8
    bits). A grid of fewer bits already fits and keeps all its levels ([-8, 7] at 4 bits, [-2, 1] at 2 bits),
    as MCT's grids do.
    """
    if not signed:
        return 0, 2**n_bits - 1
    qmin = -(2 ** (n_bits - 1))
    return qmin + int(narrow_range and qmin < INT8_WEIGHT_MIN), 2 ** (n_bits - 1) - 1


@dataclass(frozen=True)
class QuantParams:
    """A grid: x_hat = (clip(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale.

    ``scale`` / ``zero_point`` have shape () per tensor or (C,) per channel, where the channels are the
    kernel axes ``channel_axis`` flattened in C order. ``threshold`` is set for symmetric / power-of-two grids.
    ``rounding``: where ties go (``kerasq.quantizers.fake_quant``); half to even unless the platform rounds
    a tensor its own way (TFLite's average pooling).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    n_bits: int
    method: QuantizationMethod
    signed: bool
    channel_axis: int | tuple[int, ...] | None = None
    threshold: np.ndarray | None = None
    rounding: str = HALF_TO_EVEN

    @property
    def range_min(self) -> np.ndarray:
        return ((self.qmin - self.zero_point) * self.scale.astype(np.float64)).astype(np.float32)

    @property
    def range_max(self) -> np.ndarray:
        return ((self.qmax - self.zero_point) * self.scale.astype(np.float64)).astype(np.float32)

    @property
    def axes(self) -> tuple[int, ...]:
        if self.channel_axis is None:
            return ()
        return (self.channel_axis,) if isinstance(self.channel_axis, int) else tuple(self.channel_axis)

    def broadcast_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape that makes ``scale`` broadcast against a tensor of ``shape``."""
        axes = [a % len(shape) for a in self.axes]
        return tuple(d if i in axes else 1 for i, d in enumerate(shape))

    def fake_quant(self, x: np.ndarray) -> np.ndarray:
        """Numpy quantize-dequantize of ``x`` (float32 arithmetic, like the Keras layers)."""
        x = np.asarray(x, np.float32)
        shape = self.broadcast_shape(x.shape)
        scale = self.scale.astype(np.float32).reshape(shape)
        zero_point = self.zero_point.astype(np.float32).reshape(shape)
        origin = stored_zero(self.qmin, self.qmax, self.n_bits)
        q = np.clip(round_levels(x / scale + zero_point, self.rounding, origin), self.qmin, self.qmax)
        return ((q - zero_point) * scale).astype(np.float32)

    def to_dict(self) -> dict:
        def values(a: np.ndarray | None) -> list | None:
            return None if a is None else np.asarray(a).reshape(-1).tolist()

        return {
            "n_bits": self.n_bits, "method": self.method.value, "signed": self.signed,
            "qmin": self.qmin, "qmax": self.qmax, "channel_axis": self.channel_axis,
            "scale": values(self.scale), "zero_point": values(self.zero_point),
            "threshold": values(self.threshold), "range_min": values(self.range_min),
            "range_max": values(self.range_max), "rounding": self.rounding,
        }  # fmt: skip


def symmetric_grid(
    threshold: np.ndarray, n_bits: int, signed: bool, narrow_range: bool
) -> tuple[np.ndarray, int, int]:
    """(scale, qmin, qmax) of a symmetric grid with the given threshold(s)."""
    qmin, qmax = integer_range(n_bits, signed, narrow_range)
    levels = 2 ** (n_bits - 1) if signed else 2**n_bits
    return np.maximum(threshold / levels, MIN_SCALE), qmin, qmax


def no_clipping_scale(neg: np.ndarray, pos: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """The smallest step of a zero-centred grid [qmin, qmax] (zero point 0) that represents ``-neg`` and
    ``pos`` (the magnitudes of the most negative and most positive values, >= 0) without clipping: ``pos`` is
    at most the top level ``qmax * scale`` and ``-neg`` at least the bottom level ``qmin * scale`` (an unsigned
    grid, ``qmin = 0``, ignores ``neg``)."""
    scale = np.asarray(pos, np.float64) / qmax
    if qmin < 0:
        scale = np.maximum(scale, np.asarray(neg, np.float64) / -qmin)
    return np.maximum(scale, MIN_SCALE)


def uniform_grid(lo: np.ndarray, hi: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(scale, zero_point, qmin, qmax) of an asymmetric grid covering [lo, hi] (lo <= 0 <= hi)."""
    qmin, qmax = 0, 2**n_bits - 1
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    scale = np.maximum((hi - lo) / qmax, MIN_SCALE)
    zero_point = np.clip(np.round(-lo / scale), qmin, qmax)
    return scale, zero_point, qmin, qmax


@dataclass(frozen=True)
class KernelGrid:
    """How a ``QuantizeWrapper`` quantizes one kernel (its scale and zero point live in the layer's variables).

    ``method``: a ``QuantizationMethod`` value (``"symmetric"``, ``"power_of_two"``, ``"uniform"``); ``axes``:
    the kernel axes holding channels, one grid per channel (``()``: one grid for the kernel).
    """

    n_bits: int
    qmin: int
    qmax: int
    method: str
    axes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        methods = [m.value for m in QuantizationMethod]
        if self.method not in methods:
            raise ConfigError(f"KernelGrid.method={self.method!r} is not one of {methods}.")
        if not (isinstance(self.n_bits, int) and 1 <= self.n_bits <= 32 and self.qmin < self.qmax):
            raise ConfigError(
                f"KernelGrid needs an integer n_bits in 1..32 and qmin < qmax; got n_bits={self.n_bits!r}, "
                f"qmin={self.qmin!r}, qmax={self.qmax!r}."
            )
        object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))

    @classmethod
    def of(cls, params: QuantParams) -> KernelGrid:
        """The description of the grid ``params`` (its values go to the wrapper's variables)."""
        return cls(
            n_bits=params.n_bits,
            qmin=params.qmin,
            qmax=params.qmax,
            method=params.method.value,
            axes=params.axes,
        )

    @classmethod
    def from_config(cls, config: KernelGrid | Mapping[str, Any]) -> KernelGrid:
        """A ``KernelGrid`` from ``get_config()``'s dict (as a saved model holds it), or the grid itself."""
        if isinstance(config, KernelGrid):
            return config
        names = [f.name for f in fields(cls)]
        if not isinstance(config, Mapping) or set(config) - set(names) or set(names[:4]) - set(config):
            raise ConfigError(
                f"a kernel grid description must be a KernelGrid or a dict with keys {names} (axes optional); "
                f"got {config!r}."
            )
        arguments: dict[str, Any] = {k: (tuple(v) if k == "axes" else v) for k, v in config.items()}
        return cls(**arguments)

    def get_config(self) -> dict[str, Any]:
        return {"n_bits": self.n_bits, "qmin": self.qmin, "qmax": self.qmax, "method": self.method,
                "axes": list(self.axes)}  # fmt: skip
