"""Training-time quantizer layers of gradient-based fine-tuning (the deployed model uses the plain ones)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasq.gptq.soft_rounding import hard_quantize, initial_logits, soft_quantize
from kerasq.quantizers import ActivationQuantizer, QuantizeWrapper
from kerasq.quantizers.fake_quant import fake_quant, grid_scale
from kerasq.quantizers.grid import QuantParams


@keras.saving.register_keras_serializable(package="kerasq")
class SoftRoundingWrapper(QuantizeWrapper):
    """A ``QuantizeWrapper`` whose kernels round by learned logits (one per kernel value) instead of to nearest.

    ``logits[name]`` are trainable; ``log_scale[name]`` multiplies the kernel scale by ``exp(.)`` (trained only
    when asked). ``hardened()`` gives the deployed kernels and scales; the float kernel is never changed.
    """

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        self.hardness = self.add_weight(name="hardness", shape=(), initializer="zeros", trainable=False)
        self.logits: dict[str, Any] = {}
        self.log_scale: dict[str, Any] = {}
        for name in self.kernel_quantizers:
            kernel = getattr(self.layer, name)
            scale, _ = self.grid_variables(name)
            self.logits[name] = self.add_weight(
                name=f"{name}_rounding", shape=tuple(kernel.shape), initializer="zeros", trainable=True
            )
            self.log_scale[name] = self.add_weight(  # trained only when the run asks for it
                name=f"{name}_log_scale", shape=tuple(scale.shape), initializer="zeros", trainable=True
            )

    def set_params(self, name: str, params: QuantParams) -> None:
        """Set the grid, then start the rounding at the float kernel (``h`` = fractional part)."""
        super().set_params(name, params)
        scale, _ = self.kernel_grid(name)
        self.logits[name].assign(initial_logits(np.asarray(getattr(self.layer, name)), scale))
        self.log_scale[name].assign(np.zeros(self.log_scale[name].shape, np.float32))

    def _scale(self, name: str) -> Any:
        scale, _ = self.grid_variables(name)
        return grid_scale(scale, self.kernel_quantizers[name].method) * keras.ops.exp(self.log_scale[name])

    def quantized_kernels(self) -> dict[str, Any]:
        kernels = {}
        for name, spec in self.kernel_quantizers.items():
            _, zero_point = self.grid_variables(name)
            kernels[name] = soft_quantize(
                getattr(self.layer, name), self._scale(name), zero_point, self.logits[name], spec.qmin,
                spec.qmax, self.hardness,
            )  # fmt: skip
        return kernels

    def hardened(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """kernel name -> (kernel on its grid with the learned rounding, the scale it is on)."""
        result = {}
        for name, spec in self.kernel_quantizers.items():
            _, zero_point = self.grid_variables(name)
            scale = self._scale(name)
            kernel = hard_quantize(
                getattr(self.layer, name), scale, zero_point, self.logits[name], spec.qmin, spec.qmax
            )
            result[name] = (keras.ops.convert_to_numpy(kernel), keras.ops.convert_to_numpy(scale))
        return result


@keras.saving.register_keras_serializable(package="kerasq")
class BlendedActivationQuantizer(ActivationQuantizer):
    """``x + fraction * (fake_quant(x) - x)``: activation quantization faded in while ``fraction`` goes 0 -> 1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fraction = self.add_weight(name="fraction", shape=(), initializer="ones", trainable=False)

    def call(self, inputs: Any) -> Any:
        quantized = fake_quant(
            inputs, grid_scale(self.scale, self.method), self.zero_point, self.qmin, self.qmax
        )
        return inputs + self.fraction * (quantized - inputs)
