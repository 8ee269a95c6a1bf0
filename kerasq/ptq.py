"""Post-training quantization of a Keras 3 model (MCT's ``mct.ptq``): the pipeline's stages in order."""

from __future__ import annotations

from typing import Any

import keras

from kerasq.config import CoreConfig, ResourceUtilization
from kerasq.info import QuantizationInfo
from kerasq.pipeline import choose_bits, finish, prepare
from kerasq.platform import TargetPlatformCapabilities


def keras_post_training_quantization(
    model: keras.Model,
    representative_data_gen: Any,
    target_resource_utilization: ResourceUtilization | None = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """Quantize ``model`` with statistics from ``representative_data_gen``; the float model is not modified.

    Args:
        model: a Keras 3 Functional or Sequential model (nested sub-models are flattened).
        representative_data_gen: calibration data: a zero-argument callable yielding batches (each a list
            with one array per model input), a ``tf.data.Dataset``, or numpy array(s).
        target_resource_utilization: a ``ResourceUtilization`` budget; when given, mixed precision picks each
            configurable layer's bit width (``core_config.mixed_precision_config`` tunes how).
        core_config: ``CoreConfig(quantization_config, mixed_precision_config, bit_width_config)``.
        target_platform_capabilities: device rules; defaults to ``get_target_platform_capabilities("imx500")``.

    Returns:
        ``(quantized_model, QuantizationInfo)``.
    """
    prepared = prepare(model, representative_data_gen, core_config, target_platform_capabilities)
    plan, mixed = choose_bits(prepared, target_resource_utilization)
    return finish(prepared, plan, mixed)
