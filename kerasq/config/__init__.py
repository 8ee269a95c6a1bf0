"""Foundations every stage reads: the user's configs, their enums and the resource figures of a budget."""

from kerasq.config.config import (
    BitWidthConfig,
    CoreConfig,
    ManualBitWidth,
    MixedPrecisionQuantizationConfig,
    QuantizationConfig,
)
from kerasq.config.enums import MpDistanceWeighting, QuantizationErrorMethod, QuantizationMethod
from kerasq.config.resource_utilization import ResourceUtilization

__all__ = [
    "BitWidthConfig",
    "CoreConfig",
    "ManualBitWidth",
    "MixedPrecisionQuantizationConfig",
    "MpDistanceWeighting",
    "QuantizationConfig",
    "QuantizationErrorMethod",
    "QuantizationMethod",
    "ResourceUtilization",
]
