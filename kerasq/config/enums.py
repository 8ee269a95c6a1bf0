"""Enumerations users pass in configs (names match what MCT users type)."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from kerasq.errors import ConfigError

_E = TypeVar("_E", bound=Enum)


class QuantizationMethod(Enum):
    """How a tensor's quantization grid is parameterized.

    POWER_OF_TWO: symmetric, zero point 0, threshold restricted to 2**k.
    SYMMETRIC: symmetric, zero point 0, any threshold.
    UNIFORM: asymmetric range [min, max] with an integer zero point (TFLite activations).
    """

    POWER_OF_TWO = "power_of_two"
    SYMMETRIC = "symmetric"
    UNIFORM = "uniform"


class QuantizationErrorMethod(Enum):
    """Objective minimized when choosing a threshold / range.

    NOCLIPPING: cover the observed range (no clipping).
    MSE: mean squared error (default).
    MAE: mean absolute error.
    LP: mean |error|**p with ``QuantizationConfig.l_p_value``.
    KL: KL divergence between the float and quantized value distributions.
    HMSE: Hessian-weighted MSE (weights only; provided by the mixed-precision Hessian service).
    """

    NOCLIPPING = "no_clipping"
    MSE = "mse"
    MAE = "mae"
    LP = "lp"
    KL = "kl"
    HMSE = "hmse"


def parse_enum(enum_cls: type[_E], value: object, argument: str) -> _E:
    """``value`` as a member of ``enum_cls``: a member, or its name / value as a case-insensitive string."""
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        for member in enum_cls:
            if value.lower() in (str(member.value).lower(), member.name.lower()):
                return member
    choices = ", ".join(m.name for m in enum_cls)
    raise ConfigError(
        f"{argument}={value!r} is not valid; use one of {enum_cls.__name__}.{{{choices}}} (or its name as a string)."
    )


class MpDistanceWeighting(Enum):
    """How mixed-precision sensitivity combines the distances measured at the interest points.

    AVG: plain mean over the interest points (quantized activations and model outputs).
    LAST_LAYER: the model outputs only (use when AVG lets the last layer drop to very few bits).
    EXP: weights growing exponentially with depth, ``exp(-(1 - depth) / sigma)`` with depth in [0, 1]
        from the first interest point to the outputs (``exp_distance_weighting_sigma``).
    HESSIAN: weights proportional to each interest point's Hessian-trace estimate (label-free).
    """

    AVG = "avg"
    LAST_LAYER = "last_layer"
    EXP = "exp"
    HESSIAN = "hessian"
