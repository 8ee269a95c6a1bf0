"""Gradient-based post-training quantization (learned rounding against the float model, label-free)."""

from kerasq.gptq.config import GradientPTQConfig, get_keras_gptq_config
from kerasq.gptq.quantize import keras_gradient_post_training_quantization
from kerasq.info import GPTQReport

__all__ = [
    "GPTQReport",
    "GradientPTQConfig",
    "get_keras_gptq_config",
    "keras_gradient_post_training_quantization",
]
