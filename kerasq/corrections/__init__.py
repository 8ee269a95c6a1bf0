"""Accuracy corrections applied around quantization (bias correction, ...)."""

from kerasq.corrections.bias_correction import bias_shift, correct_biases

__all__ = ["bias_shift", "correct_biases"]
