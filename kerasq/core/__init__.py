"""User-facing configuration: configs, enums and resource figures."""

from kerasq.core.config import (
    BitWidthConfig,
    CoreConfig,
    ManualBitWidth,
    MixedPrecisionQuantizationConfig,
    QuantizationConfig,
)
from kerasq.core.enums import MpDistanceWeighting, QuantizationErrorMethod, QuantizationMethod
from kerasq.core.resource_utilization import ResourceUtilization

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
    "keras_resource_utilization_data",
]


def __getattr__(name: str):  # the resource report needs the whole pipeline; import it on first use
    if name == "keras_resource_utilization_data":
        from kerasq.mixed_precision.resources import keras_resource_utilization_data

        return keras_resource_utilization_data
    raise AttributeError(name)
