"""The export-only twin of ``QuantizeWrapper``: the layer's op on its kernel passed through TensorFlow's
per-channel (or per-tensor) fake quant at the storage range of the kernel's own grid, laid out as the TFLite
converter accepts it (see ``TFQuantizedWeighted._layout_kernel``), and its bias on its int32 grid.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.errors import ExportError
from kerasq.quantizers import QuantizeWrapper
from kerasq.quantizers.grid import KernelGrid, integer_range
from kerasq.quantizers.kernel_ops import LINEAR_OPS
from kerasq.quantizers.weighted_kinds import kinds_with
from kerasq.quantizers.wrapper import int8_storage_steps


def _not_splat(bias: np.ndarray) -> np.ndarray:
    """``bias`` with every other element one float32 ulp higher when all its elements are equal.

    The converter stores a constant whose elements are all equal as one value, and quantizes that value to
    int32 with the first channel's bias scale for every channel: a per-channel kernel exactly on its grid leaves
    bias correction nothing to change, so a per-channel affine with one offset (``Rescaling(scale=[...],
    offset=0.25)``) had every channel's offset scaled by its own kernel scale over the first one's. One ulp
    (about 6e-8 relative) is far below the int32 bias step."""
    flat = np.asarray(bias, np.float32).reshape(-1)
    if flat.size < 2 or np.any(flat != flat[0]):
        return bias
    flat = flat.copy()
    flat[1::2] = np.nextafter(flat[1::2], np.float32(np.inf))
    return flat.reshape(np.shape(bias))


def _storage_levels(bits: int) -> tuple[float, float, bool]:
    """(qmin, qmax, narrow) of the ``bits``-bit integer tensor a kernel is stored in: int8 without -128
    (TFLite's int8 kernels), int4 with all 16 levels [-8, 7]."""
    qmin, qmax = integer_range(bits, signed=True, narrow_range=True)
    return float(qmin), float(qmax), qmin == -qmax


def _per_channel(kernel: tf.Tensor, scale: np.ndarray, bits: int = 8) -> tf.Tensor:
    """Fake-quantize ``kernel`` on its last axis on the symmetric ``bits``-bit storage grid of ``scale``."""
    scale = scale.reshape(-1).astype(np.float32)
    qmin, qmax, narrow = _storage_levels(bits)
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, qmin * scale, qmax * scale, num_bits=bits, narrow_range=narrow
    )


def _per_tensor(kernel: tf.Tensor, scale: float, bits: int = 8) -> tf.Tensor:
    qmin, qmax, narrow = _storage_levels(bits)
    return tf.quantization.fake_quant_with_min_max_vars(kernel, qmin * scale, qmax * scale, num_bits=bits,
                                                        narrow_range=narrow)  # fmt: skip


INT4_KINDS = kinds_with("int4_storage")  # the converter rejects int4 transposed-convolution kernels


def int4_kernel(kind: str, spec: KernelGrid) -> bool:
    """A kernel LiteRT can hold as int4: a conv / dense / depthwise kernel on a symmetric grid of at most
    4 bits (levels in [-8, 7]; LiteRT runs an int4 kernel holding -8 exactly)."""
    return kind in INT4_KINDS and spec.n_bits <= 4 and spec.qmin >= -8 and spec.qmax <= 7


class TFQuantizedWeighted(keras.layers.Layer):
    """Export-only twin of ``QuantizeWrapper``: the same op on a TensorFlow fake-quantized kernel.

    Every check happens here, at construction, so a refusal is an ``ExportError`` naming the layer (an error
    raised inside ``call`` would reach the user wrapped in Keras's own exception). ``requantized`` says why the
    file's kernel differs from the Keras kernel, when it does.
    """

    def __init__(
        self,
        source: QuantizeWrapper,
        int4_weights: bool = False,
        output_affine: tuple[float, float] = (1.0, 0.0),
        *,
        max_kernel_elements: int,
        **kwargs: Any,
    ) -> None:
        """``output_affine=(a, b)``: compute ``a * op(x) + b`` instead (kernel and its grid scaled by ``a``,
        so the integer kernel is the same; bias ``a * bias + b``): an affine op after the layer folded in.
        ``max_kernel_elements``: the largest kernel constant the converter quantizes; a larger conv / dense
        kernel is converted in output-channel parts (see ``_parts``)."""
        super().__init__(name=source.layer.name, **kwargs)
        self.source, self.layer, self.kind = source, source.layer, source.kind
        self.max_kernel_elements = max_kernel_elements
        self.factor, self.offset = output_affine
        if self.kind not in kinds_with("export_twin"):
            raise ExportError(
                f"Layer {self.layer.name!r} ({type(self.layer).__name__}) has no INT8 TFLite lowering; kerasq "
                "splits separable convolutions into depthwise + pointwise when it quantizes, so re-quantize the "
                "float model with kerasq."
            )
        if getattr(self.layer, "data_format", "channels_last") != "channels_last":
            raise ExportError(
                f"Layer {self.layer.name!r} uses channels_first, which TFLite does not support."
            )
        if len(self.layer.kernel.shape) > 4:
            raise ExportError(
                f"Layer {self.layer.name!r} ({type(self.layer).__name__}): 3-D convolutions have no INT8 TFLite "
                "lowering in kerasq; export FAKELY_QUANT, or use 2-D convolutions."
            )
        spec = source.kernel_quantizers["kernel"]
        scale, zero_point = source.kernel_grid("kernel")
        if spec.n_bits > 8 or spec.qmin < -127 or np.any(zero_point != 0):
            raise ExportError(
                f"Layer {self.layer.name!r}: kernel is not on a symmetric int8 grid ({spec.n_bits} bits, qmin "
                f"{spec.qmin}); INT8 TFLite export needs symmetric weights of at most 8 bits with narrow range "
                "(both built-in platforms quantize weights so)."
            )
        self.bits = 4 if int4_weights and int4_kernel(self.kind, spec) else 8  # storage width of the kernel
        # The kernel already on its (possibly < 8-bit) grid: the int8 fake quant below is then exact.
        kernel = np.asarray(source.quantized_kernels()["kernel"], np.float32)
        self.requantized: str | None = None
        # the bias on its int32 grid, as the Keras model adds it: the converter's own rounding is then exact
        bias = source.quantized_bias()
        bias = self.factor * keras.ops.convert_to_numpy(bias) if bias is not None else 0.0
        has_bias = self.layer.bias is not None or self.offset != 0.0
        self._bias = np.asarray(bias + self.offset, np.float32) if has_bias else None
        # int8 storage at the finest scale holding the grid's levels, which the Keras bias grid assumes
        finer = int8_storage_steps(spec.n_bits, spec.qmin, spec.qmax)
        if self.bits == 4 and has_bias and finer > 1:
            self.requantized = (
                "bias stored in int32 at input scale x the int4 kernel's scale, a coarser grid than the Keras "
                "model's (which assumes the kernel stored in int8; export without int4_weights to match it)"
            )
        steps = 1 if self.bits == 4 else finer  # int4 storage: the grid's own scale
        self._layout_kernel(
            kernel * self.factor, np.asarray(scale, np.float32) * abs(self.factor) / steps, list(spec.axes)
        )

    def _layout_kernel(self, kernel: np.ndarray, scale: np.ndarray | np.floating, axes: list[int]) -> None:
        """Lay the kernel out for TensorFlow fake quant as the op in ``call`` reads it.

        The converter keeps per-channel scales only along the last axis of the constant it quantizes, and it
        may reshape that constant but not transpose it. So Conv1D kernels gain a leading axis, depthwise
        kernels are quantized as [kh, kw, 1, in * multiplier] then reshaped, and dense kernels become 1x1
        convolutions. The fake-quant op itself must be built inside ``call`` (in the traced graph): a kernel
        fake-quantized eagerly would reach the converter as a plain float constant.
        """
        rank = kernel.ndim
        self._reshape_to: tuple[int, ...] | None = None
        if self.kind == "dense" or (self.kind == "conv" and rank == 3):
            kernel = kernel.reshape(1, *kernel.shape) if rank == 3 else kernel.reshape(1, 1, *kernel.shape)
            axes = [a + 4 - rank for a in axes]
        elif self.kind == "depthwise_conv":
            spatial = (1,) * (4 - rank) + kernel.shape[:-2]  # DepthwiseConv1D runs as a 2-D op
            self._reshape_to = (*spatial, *kernel.shape[-2:])
            kernel = kernel.reshape(*spatial, 1, kernel.shape[-2] * kernel.shape[-1])
            axes = [3] if axes else []
        elif axes and axes != [
            kernel.ndim - 1
        ]:  # transposed convolutions: channels on axis 2 of [kh, kw, out, in]
            scale, axes = np.float32(float(np.max(np.abs(kernel))) / 127.0 or 1.0), []
            self.bits = 8
            self.requantized = (
                "kernel re-gridded per tensor (int8, one scale): the TFLite converter keeps no per-channel scales "
                "on a transposed-convolution kernel; use the 'tflite' platform, which quantizes it per tensor"
            )
        self._kernel_values, self._kernel_scale, self._per_channel = kernel, scale, bool(axes)

    def _parts(self) -> list[slice]:
        """Output-channel slices the kernel is converted in: TF 2.21's converter leaves a fake-quantized
        constant of 2**25 elements or more in float (VGG16's first dense layer at 128 px has 8192 x 4096)."""
        size, outputs = self._kernel_values.size, self._kernel_values.shape[-1]
        count = min(-(-size // self.max_kernel_elements), outputs)  # at least one channel per part
        if count == 1 or self.kind not in ("conv", "dense") or self._reshape_to is not None:
            return [slice(None)]
        bounds = np.linspace(0, outputs, count + 1).round().astype(int)
        return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    @property
    def split(self) -> bool:
        """The op is converted as several along its output channels (then concatenated)."""
        return len(self._parts()) > 1

    def _kernel(self, part: slice = slice(None)) -> tf.Tensor:
        kernel = tf.constant(self._kernel_values[..., part])
        if self._per_channel:
            kernel = _per_channel(kernel, np.reshape(self._kernel_scale, -1)[part], self.bits)
        else:
            kernel = _per_tensor(kernel, float(np.reshape(self._kernel_scale, -1)[0]), self.bits)
        return kernel if self._reshape_to is None else tf.reshape(kernel, self._reshape_to)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def _biased(self, op: Any, x: Any) -> Any:
        """``op(x, kernel) + bias``, per output-channel part (each part keeps its bias, so the converter folds
        it into that part's kernel), concatenated."""
        outputs = []
        for part in self._parts():
            y = op(x, self._kernel(part))
            outputs.append(y if self._bias is None else y + tf.constant(_not_splat(self._bias[part])))
        return outputs[0] if len(outputs) == 1 else tf.concat(outputs, -1)

    def call(self, x: Any) -> Any:
        layer = self.layer
        if self.kind == "dense":
            y = self._dense(x)
        elif self.kind == "conv_transpose":
            y = self._biased(lambda t, k: LINEAR_OPS["conv_transpose"](layer, t, {"kernel": k}), x)
        elif (
            len(layer.kernel.shape) == 3
        ):  # Conv1D / DepthwiseConv1D as 2-D ops on [batch, 1, steps, channels]
            strides, dilations = (1, *layer.strides), (1, *layer.dilation_rate)
            y = tf.squeeze(self._conv2d(tf.expand_dims(self._causal_pad(x), 1), strides, dilations), 1)
        else:
            y = self._conv2d(x, layer.strides, layer.dilation_rate)
        return layer.activation(y) if layer.activation is not None else y

    def _causal_pad(self, x: Any) -> Any:
        layer = self.layer
        if getattr(layer, "padding", None) != "causal":
            return x
        return tf.pad(x, [[0, 0], [layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0], [0, 0]])

    def _conv2d(self, x: Any, strides: tuple[int, ...], dilations: tuple[int, ...]) -> Any:
        """The raw TensorFlow ops, which carry dilation themselves: ``tf.nn.convolution`` would rewrite a
        dilated convolution as SpaceToBatchND / BatchToSpaceND around it, tensors the converter leaves float."""
        padding = "VALID" if self.layer.padding in ("valid", "causal") else "SAME"
        op = tf.raw_ops.DepthwiseConv2dNative if self.kind == "depthwise_conv" else tf.raw_ops.Conv2D
        return self._biased(
            lambda t, k: op(
                input=t, filter=k, strides=[1, *strides, 1], padding=padding, dilations=[1, *dilations, 1]
            ),
            x,
        )

    def _dense(self, x: Any) -> Any:
        """Dense as a 1x1 convolution (the converter rejects per-channel FULLY_CONNECTED constants).

        With static inner dimensions the batch stays the leading dimension of every reshape (a feature map
        runs as it is, other ranks as ``[batch, 1, positions, units]``): folding positions into the batch
        (``[-1, 1, 1, units]``) would make the converter declare a batch of 1 for a tensor that holds many,
        a shape LiteRT resizes at run time and TensorFlow Lite Micro, which plans its arena from the declared
        shapes, does not (ConvNeXt's pointwise Dense layers)."""
        units_in, units_out = self._kernel_values.shape[-2:]
        inner = tuple(x.shape[1:-1])

        def conv(t: Any) -> Any:
            return self._biased(lambda v, k: tf.nn.conv2d(v, k, 1, "VALID"), t)

        if all(d is not None for d in inner):  # static shape: plain RESHAPEs, no shape arithmetic ops
            if len(inner) == 2:
                return conv(x)
            y = conv(tf.reshape(x, [-1, 1, int(np.prod(inner, dtype=np.int64)), units_in]))
            return tf.reshape(y, [-1, *inner, units_out])
        y = conv(tf.reshape(x, [-1, 1, 1, units_in]))
        return tf.reshape(y, tf.concat([tf.shape(x)[:-1], [units_out]], 0))
