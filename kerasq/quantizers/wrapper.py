"""``QuantizeWrapper``: runs a weighted layer with fake-quantized kernels."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasq.params import QuantParams
from kerasq.quantizers.fake_quant import fake_quant, grid_scale
from kerasq.quantizers.kernel_ops import weighted_forward


def _broadcast_shape(kernel_shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    return tuple(dim if i in axes else 1 for i, dim in enumerate(kernel_shape))


@keras.saving.register_keras_serializable(package="kerasq")
class QuantizeWrapper(keras.layers.Wrapper):
    """Wraps a conv/dense-like layer; its kernels pass through per-channel fake quantization.

    Args:
        layer: the (cloned) float layer.
        kind: op kind of the layer (``conv``, ``dense``, ``depthwise_conv``, ...).
        kernel_quantizers: kernel attribute name -> grid description
            ``{"n_bits", "qmin", "qmax", "method", "axes"}`` (``axes``: kernel axes holding channels;
            empty for per-tensor).
        train_scale: the kernel scales are trainable (quantization-aware training; see ``kerasq.qat``).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        kind: str,
        kernel_quantizers: dict[str, dict],
        train_scale: bool = False,
        **kwargs: Any,
    ):
        super().__init__(layer, **kwargs)
        self.train_scale = bool(train_scale)
        self.kind = kind
        self.kernel_quantizers = {name: dict(spec) for name, spec in kernel_quantizers.items()}
        self._grid_vars: dict[str, tuple[Any, Any]] = {}

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        for name, spec in self.kernel_quantizers.items():
            kernel_shape = tuple(getattr(self.layer, name).shape)
            shape = _broadcast_shape(kernel_shape, list(spec["axes"]))
            scale = self.add_weight(
                name=f"{name}_scale", shape=shape, initializer="ones", trainable=self.train_scale
            )
            zero_point = self.add_weight(
                name=f"{name}_zero_point", shape=shape, initializer="zeros", trainable=False
            )
            self._grid_vars[name] = (scale, zero_point)
        self.built = True

    def set_params(self, name: str, params: QuantParams) -> None:
        scale, zero_point = self._grid_vars[name]
        scale.assign(np.asarray(params.scale, np.float32).reshape(scale.shape))
        zero_point.assign(np.asarray(params.zero_point, np.float32).reshape(zero_point.shape))

    def grid_variables(self, name: str) -> tuple[Any, Any]:
        """The (scale, zero_point) variables of one kernel (``scale`` may be trained; see ``kerasq.qat``)."""
        return self._grid_vars[name]

    def kernel_grid(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(scale, zero_point) one kernel is quantized with, shaped to broadcast against it."""
        scale, zero_point = self._grid_vars[name]
        scale = grid_scale(scale, self.kernel_quantizers[name]["method"])
        return np.asarray(keras.ops.convert_to_numpy(scale)), np.asarray(zero_point.numpy())

    def quantized_kernels(self) -> dict[str, Any]:
        kernels = {}
        for name, spec in self.kernel_quantizers.items():
            scale, zero_point = self._grid_vars[name]
            kernels[name] = fake_quant(
                getattr(self.layer, name), grid_scale(scale, spec["method"]), zero_point, spec["qmin"],
                spec["qmax"],
            )  # fmt: skip
        return kernels

    def call(self, inputs: Any) -> Any:
        return weighted_forward(self.kind, self.layer, inputs, self.quantized_kernels())

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(kind=self.kind, kernel_quantizers=self.kernel_quantizers, train_scale=self.train_scale)
        return config
