"""User-facing configuration: configs and enums."""

from kerasq.core.config import CoreConfig, QuantizationConfig
from kerasq.core.enums import QuantizationErrorMethod, QuantizationMethod

__all__ = ["CoreConfig", "QuantizationConfig", "QuantizationErrorMethod", "QuantizationMethod"]
