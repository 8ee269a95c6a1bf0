"""``mct.core`` as MCT users type it: the configs (``kerasq.config``) and the resource report of a model.

This package sits at the top of the layering (the report runs the pipeline's first stages); code inside kerasq
imports the configs from ``kerasq.config``.
"""

from kerasq.config import (
    BitWidthConfig,
    CoreConfig,
    ManualBitWidth,
    MixedPrecisionQuantizationConfig,
    MpDistanceWeighting,
    QuantizationConfig,
    QuantizationErrorMethod,
    QuantizationMethod,
    ResourceUtilization,
)
from kerasq.pipeline import keras_resource_utilization_data

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
