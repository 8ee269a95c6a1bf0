"""Target platform capabilities: declarative device quantization rules."""

from kerasq.platform.builtin import get_target_platform_capabilities, imx500, tflite
from kerasq.platform.capabilities import OperatorSet, OpQuantizationConfig, TargetPlatformCapabilities

__all__ = [
    "OpQuantizationConfig",
    "OperatorSet",
    "TargetPlatformCapabilities",
    "get_target_platform_capabilities",
    "imx500",
    "tflite",
]
