"""``QuantizeWrapper``: runs a weighted layer with fake-quantized kernels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from kerasq.quantizers.fake_quant import fake_quant, grid_scale, round_ste
from kerasq.quantizers.grid import KernelGrid, QuantParams
from kerasq.quantizers.kernel_ops import weighted_forward
from kerasq.quantizers.variables import layer_variable


def _broadcast_shape(kernel_shape: tuple[int, ...], axes: list[int]) -> tuple[int, ...]:
    return tuple(dim if i in axes else 1 for i, dim in enumerate(kernel_shape))


def int8_storage_steps(n_bits: int, qmin: int, qmax: int) -> int:
    """int8 steps per step of a kernel grid when the kernel is stored in int8 at the finest scale that holds
    its levels exactly: 1 from 8 bits up, ``127 // max|level|`` below (15 at 4 bits: [-8, 7] as multiples of 15
    within [-127, 127]; 63 at 2 bits). TFLite stores a bias in int32 at input scale times the stored kernel
    scale, so the finer storage keeps the bias rounding of a 4-bit layer as small as an 8-bit one's."""
    if n_bits >= 8:
        return 1
    return max(1, 127 // max(-int(qmin), int(qmax), 1))


def bias_on_grid(bias: Any, input_scale: float | None, kernel_scale: Any) -> Any:
    """``bias`` rounded to steps of ``input_scale * kernel_scale`` (straight-through), the grid TFLite stores it
    on as int32; unchanged when ``input_scale`` is None or the kernel's scales are not one per output channel
    (nor one for all)."""
    step = keras.ops.reshape(kernel_scale, (-1,))
    if bias is None or input_scale is None or step.shape[0] not in (1, bias.shape[0]):
        return bias
    step = input_scale * keras.ops.cast(step, "float32")
    return round_ste(bias / step) * step


@keras.saving.register_keras_serializable(package="kerasq")
class QuantizeWrapper(keras.layers.Wrapper):
    """Wraps a conv/dense-like layer; its kernels pass through per-channel fake quantization.

    Args:
        layer: the (cloned) float layer.
        kind: op kind of the layer (``conv``, ``dense``, ``depthwise_conv``, ...).
        kernel_quantizers: kernel attribute name -> its ``KernelGrid`` (or the dict ``KernelGrid.get_config``
            gives, as a saved model holds it).
        train_scale: the kernel scales are trainable (quantization-aware training; see ``kerasq.qat``).
        input_scale: the scale of the grid the layer's input is on (None: its input is not on a known grid).
            The bias is then added on its integer grid, steps of ``input_scale * kernel scale`` per output
            channel, as integer runtimes store it (``quantized_bias``).
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        kind: str,
        kernel_quantizers: Mapping[str, KernelGrid | Mapping[str, Any]],
        train_scale: bool = False,
        input_scale: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(layer, **kwargs)
        self.train_scale = bool(train_scale)
        self.input_scale = None if input_scale is None else float(input_scale)
        self.kind = kind
        self.kernel_quantizers = {
            name: KernelGrid.from_config(grid) for name, grid in kernel_quantizers.items()
        }
        self._grid_vars: dict[str, tuple[Any, Any]] = {}

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        for name, spec in self.kernel_quantizers.items():
            kernel_shape = tuple(getattr(self.layer, name).shape)
            shape = _broadcast_shape(kernel_shape, list(spec.axes))
            scale = layer_variable(self, f"{name}_scale", shape, 1.0, trainable=self.train_scale)
            zero_point = layer_variable(self, f"{name}_zero_point", shape, 0.0)
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
        scale = grid_scale(scale, self.kernel_quantizers[name].method)
        return np.asarray(keras.ops.convert_to_numpy(scale)), np.asarray(zero_point.numpy())

    def quantized_kernels(self) -> dict[str, Any]:
        kernels = {}
        for name, spec in self.kernel_quantizers.items():
            scale, zero_point = self._grid_vars[name]
            kernels[name] = fake_quant(
                getattr(self.layer, name), grid_scale(scale, spec.method), zero_point, spec.qmin, spec.qmax,
            )  # fmt: skip
        return kernels

    def quantized_bias(self, input_scale: float | None = None) -> Any:
        """The bias as an integer runtime adds it: rounded to steps of ``input_scale`` times the kernel's int8
        storage scale of each output channel (TFLite's int32 bias; ``int8_storage_steps``). Unrounded without an ``input_scale`` or a single-kernel
        grid whose channels are the bias's; None for a layer without bias. ``input_scale``: another input grid
        than the layer's own (``self.input_scale``)."""
        bias = getattr(self.layer, "bias", None)
        input_scale = self.input_scale if input_scale is None else input_scale
        if bias is None or input_scale is None or list(self.kernel_quantizers) != ["kernel"]:
            return bias
        scale, _ = self._grid_vars["kernel"]
        spec = self.kernel_quantizers["kernel"]
        steps = int8_storage_steps(spec.n_bits, spec.qmin, spec.qmax)
        return bias_on_grid(bias, input_scale, grid_scale(scale, spec.method) / steps)

    def call(self, inputs: Any) -> Any:
        kernels, bias = self.quantized_kernels(), self.quantized_bias()
        return weighted_forward(self.kind, self.layer, inputs, kernels, bias)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            kind=self.kind, kernel_quantizers={n: g.get_config() for n, g in self.kernel_quantizers.items()},
            train_scale=self.train_scale,
            input_scale=self.input_scale,
        )  # fmt: skip
        return config
