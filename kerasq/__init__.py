"""kerasq: quantize Keras 3 models for edge devices.

``import kerasq as mct`` runs code written for Sony MCT's Keras API:
``mct.ptq.keras_post_training_quantization(model, data, core_config=mct.core.CoreConfig(...))``.
"""

from kerasq import budget_search, core, errors, export, exporter, gptq, layers, mixed_precision, ptq, qat
from kerasq.errors import KerasqError
from kerasq.info import QuantizationInfo
from kerasq.platform import get_target_platform_capabilities
from kerasq.progress import set_progress
from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper

__version__ = "0.1.0"

__all__ = [
    "ActivationQuantizer",
    "KerasqError",
    "QuantizationInfo",
    "QuantizeWrapper",
    "budget_search",
    "core",
    "errors",
    "export",
    "exporter",
    "get_target_platform_capabilities",
    "gptq",
    "layers",
    "mixed_precision",
    "ptq",
    "qat",
    "set_progress",
]
