"""The TensorFlow graph the TFLite converter turns into an integer model.

Each ``ActivationQuantizer`` becomes ``tf.quantization.fake_quant_with_min_max_vars`` with the exact range of
its grid, and each ``QuantizeWrapper`` computes its op on its already-quantized kernel passed through
``fake_quant_with_min_max_vars_per_channel`` at the int8 range of the same scale (exact, and kernels of
fewer than 8 bits keep their grid inside the int8 tensor). With ``Optimize.DEFAULT`` and no representative dataset, the
converter reads those ranges and produces int8 tensors with exactly kerasq's scales and zero points.
Ranges sit on their grids and include zero, so TensorFlow's range nudging changes nothing.

Layouts follow what the converter accepts: per-channel fake quant acts on the last kernel axis, and a
per-channel quantized constant may be reshaped but not transposed. Dense layers therefore run as 1x1
convolutions (the converter rejects per-channel FULLY_CONNECTED), depthwise kernels are quantized as
[kh, kw, 1, in * multiplier] then reshaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.errors import ExportError
from kerasq.export.lowering import (
    AFFINE_THEN_CLIP,
    CLIPPED_RANGE,
    LOWERINGS,
    AveragePoolAsDepthwise,
    InverseSqrtOfGrid,
    LoweredActivation,
    ShiftedActivationOnGrid,
)
from kerasq.export.report import Requantization
from kerasq.graph import read_model
from kerasq.graph.model_graph import Graph, Node, fresh_inputs, resolve_refs
from kerasq.layers import ShiftedActivation
from kerasq.quantizers import ActivationQuantizer, FusedTensorRange, QuantizeWrapper
from kerasq.quantizers.grid import KernelGrid, integer_range
from kerasq.quantizers.kernel_ops import LINEAR_OPS
from kerasq.quantizers.wrapper import int8_storage_steps


def grid_values(q: ActivationQuantizer) -> np.ndarray:
    """Every value ``q``'s grid can take (float32, ascending)."""
    scale, zero_point = q.grid()
    return ((np.arange(q.qmin, q.qmax + 1) - zero_point) * scale).astype(np.float32)


def storage_range(q: ActivationQuantizer) -> tuple[float, float, int]:
    """(lo, hi, bits) of the integer tensor that holds ``q``'s grid with ``q``'s own scale.

    16-bit grids are int16 tensors. A grid of at most 8 bits lives in an int8 tensor with the same scale: its
    levels are 256 consecutive steps that contain the grid's ``qmax - qmin + 1`` levels (and zero).
    """
    scale, zero_point = q.grid()
    if q.n_bits > 8:
        return (q.qmin - zero_point) * scale, (q.qmax - zero_point) * scale, q.n_bits
    low = q.qmin - (255 - (q.qmax - q.qmin)) // 2  # the grid sits in the middle of the int8 levels
    return (low - zero_point) * scale, (low + 255 - zero_point) * scale, 8


class TFFakeQuantActivation(keras.layers.Layer):
    """Export-only twin of ``ActivationQuantizer`` using TensorFlow's fake-quant op.

    A grid narrower than 8 bits is stored in int8 with its own scale and clipped to its levels by a
    MINIMUM / MAXIMUM pair on the same scale, so the integer file computes exactly what the Keras layer does.
    """

    def __init__(self, source: ActivationQuantizer, name: str | None = None, **kwargs: Any) -> None:
        # Short names: they end up in every tensor name of the flatbuffer.
        super().__init__(name=name or source.name.replace("_activation_quantizer", "_aq"), **kwargs)
        self.lo, self.hi, self.n_bits = storage_range(source)
        values = grid_values(source)
        self.clip = (float(values[0]), float(values[-1])) if source.n_bits < 8 else None

    def _fake_quant(self, x: Any) -> Any:
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=self.n_bits)

    def call(self, x: Any) -> Any:
        x = self._fake_quant(x)
        if self.clip is not None:
            x = self._fake_quant(tf.clip_by_value(x, *self.clip))
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


class TFFakeQuantRange(keras.layers.Layer):
    """Export-only: an 8-bit fake quant on a fixed range (a tensor the Keras model does not quantize)."""

    def __init__(self, lo: float, hi: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lo, self.hi = float(lo), float(hi)

    def call(self, x: Any) -> Any:
        return tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def activation_width(q_model: keras.Model) -> int:
    """8 (int8 scheme: every activation grid has at most 8 bits) or 16 (int16x8 scheme: every activation
    16-bit, signed, zero point 0); anything else is refused, naming the quantizers that do not fit."""
    quantizers = [layer for layer in q_model.layers if isinstance(layer, ActivationQuantizer)]
    widths = {q.n_bits for q in quantizers}
    if all(bits <= 8 for bits in widths):
        return 8
    if widths == {16}:
        off = [q.name for q in quantizers if q.grid()[1] != 0 or q.qmin != -32768 or q.qmax != 32767]
        if off:
            raise ExportError(
                "TFLite's int16x8 scheme needs signed symmetric 16-bit activations (zero point 0, range "
                f"[-32768, 32767]); not so: {', '.join(off)}. Use a platform with signed symmetric 16-bit "
                "activations, or export FAKELY_QUANT."
            )
        return 16
    others = [f"{q.name} ({q.n_bits}-bit)" for q in quantizers if q.n_bits > 8]
    raise ExportError(
        "TFLite integer export needs activations of at most 8 bits everywhere (int8 scheme), or 16 bits "
        f"everywhere (int16x8). Activation quantizers wider than 8 bits: {', '.join(others)}. Re-quantize them "
        "(e.g. a BitWidthConfig or network-editor rule), or export FAKELY_QUANT (float TFLite graph)."
    )


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


INT4_KINDS = ("conv", "dense", "depthwise_conv")  # the converter rejects int4 transposed-convolution kernels


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
        **kwargs: Any,
    ) -> None:
        """``output_affine=(a, b)``: compute ``a * op(x) + b`` instead (kernel and its grid scaled by ``a``,
        so the integer kernel is the same; bias ``a * bias + b``): an affine op after the layer folded in."""
        super().__init__(name=source.layer.name, **kwargs)
        self.source, self.layer, self.kind = source, source.layer, source.kind
        self.factor, self.offset = output_affine
        if self.kind not in ("conv", "depthwise_conv", "conv_transpose", "dense"):
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
                f"Layer {self.layer.name!r}: kernel is not on a symmetric int8 grid ({spec['n_bits']} bits, qmin "
                f"{spec['qmin']}); INT8 TFLite export needs symmetric weights of at most 8 bits with narrow range "
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

    def _layout_kernel(self, kernel: np.ndarray, scale: np.ndarray, axes: list[int]) -> None:
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
        count = min(-(-size // _MAX_KERNEL_ELEMENTS), outputs)  # at least one channel per part
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


_MAX_KERNEL_ELEMENTS = 2**24

# Kinds whose TFLite kernels apply a following RELU / RELU6 themselves (the converter fuses the pair), so the
# tensor between them is never stored.
_TFLITE_FUSES_ACTIVATION = ("conv", "depthwise_conv", "dense", "add", "subtract", "multiply")
_TFLITE_FUSED_ACTIVATIONS = ("relu", "relu6")

# Activations the TFLite converter leaves in float inside a quantized graph, and no lowering here replaces.
_NO_INTEGER_KERNEL = {
    "elu": "the converter leaves ELU in float (LiteRT's int8 EXP it could be built from does not run on TFLM)",
    "selu": "TFLite has no SELU kernel; the converter leaves its pieces in float",
    "softplus": "TFLite has no softplus kernel; the converter leaves its pieces in float",
}


def _layer_name(node: Node) -> str:
    return node.op.layer.name if isinstance(node.op, QuantizeWrapper) else node.name


def tflite_fuses(fused: FusedTensorRange) -> bool:
    """TFLite never stores this tensor either: its producer's kernel applies the consumer (relu / relu6)."""
    return (
        fused.producer_kind in _TFLITE_FUSES_ACTIVATION and fused.consumer_kind in _TFLITE_FUSED_ACTIVATIONS
    )


def _output_quantizer(node: Node, consumers: dict[int, list[Node]]) -> ActivationQuantizer | None:
    """The (at most 8-bit) quantizer that alone reads ``node``'s output; None if there is none."""
    after = consumers.get(node.outputs[0], [])
    if len(after) == 1 and isinstance(after[0].op, ActivationQuantizer) and after[0].op.n_bits <= 8:
        return after[0].op
    return None


def _relu_output_quantizer(fused: Node, consumers: dict[int, list[Node]]) -> ActivationQuantizer | None:
    """The quantizer right after the relu / relu6 that reads fused tensor ``fused`` (None if there is none)."""
    readers = consumers.get(fused.outputs[0], [])
    if len(readers) != 1 or readers[0].kind not in _TFLITE_FUSED_ACTIVATIONS:
        return None
    return _output_quantizer(readers[0], consumers)


def _relu_exact(relu: Node, grid: ActivationQuantizer) -> bool:
    """relu(q(x)) == q(relu(x)) on ``grid`` (zero is a level); for relu6 also 6 must be a level or above the top."""
    if relu.kind == "relu":
        return True
    scale, _ = grid.grid()
    top, six = grid_values(grid)[-1], 6.0 / scale
    return bool(top <= 6.0 or abs(six - round(six)) < 1e-6)


@dataclass(frozen=True)
class ExportGraph:
    """What the converter gets, and what the exporter needs to check and report its result.

    Attributes:
        model: ``q_model`` computed with TensorFlow fake-quant ops.
        requantized: the places where ``model`` rounds a tensor that ``q_model`` keeps exact.
        sample_shapes: model input name -> one calibration sample's shape, for inputs with unknown
            dimensions.
        references: model input name -> the calibration samples its quantizer keeps (empty when it keeps none).
        float_layers: layers kerasq does not know and kept in float (the file may compute them differently).
    """

    model: keras.Model
    requantized: list[Requantization]
    sample_shapes: dict[str, tuple[int, ...]]
    references: dict[str, np.ndarray]
    float_layers: list[str]


def _foldable_affine_consumers(graph: Graph, consumers: dict[int, list[Node]]) -> dict[str, Any]:
    """Weighted layers whose fused consumer is an affine op then a clip (hard_sigmoid) that the output grid
    does itself: layer name -> (factor, offset) to fold in; the fused range and the activation node -> None.

    The file then rounds once, onto the activation's output grid, exactly as the Keras model does, instead of
    storing the layer's output on an 8-bit grid first (measured on a squeeze-and-excite block: 52% of the
    hard-sigmoid outputs one step off without the fold)."""
    folded: dict[str, Any] = {}
    for node in graph.nodes:
        if not isinstance(node.op, QuantizeWrapper) or node.op.layer.activation not in (
            None,
            keras.activations.linear,
        ):
            continue
        readers = consumers.get(node.outputs[0], [])
        if len(readers) != 1 or not isinstance(readers[0].op, FusedTensorRange):
            continue
        after = consumers.get(readers[0].outputs[0], [])
        if len(after) != 1 or after[0].kind not in AFFINE_THEN_CLIP:
            continue
        quantizer = _output_quantizer(after[0], consumers)
        factor, offset, (low, high) = AFFINE_THEN_CLIP[after[0].kind]
        if quantizer is not None and low <= grid_values(quantizer)[0] <= grid_values(quantizer)[-1] <= high:
            folded.update({node.name: (factor, offset), readers[0].name: None, after[0].name: None})
    return folded


def export_graph(q_model: keras.Model, int4_weights: bool = False) -> ExportGraph:
    """A Keras model computing ``q_model`` with TensorFlow fake-quant ops (for the TFLite converter only), and
    the places where it requantizes a tensor that ``q_model`` keeps exact.

    The quantized model is read back as a graph and replayed: quantizers and weighted layers become their
    TensorFlow fake-quant twins; a tensor the platform fused but TFLite stores (``FusedTensorRange``) gets the
    8-bit grid recorded at quantization time; activations TFLite has no single integer kernel for are lowered
    (``kerasq.export.lowering``). ``int4_weights``: kernels on grids of at most 4 bits get 4-bit fake quant.
    """
    graph = read_model(q_model)
    producers, consumers = graph.producers(), graph.consumers()
    requantized: list[Requantization] = []
    tensors: dict[int, Any] = fresh_inputs(graph)
    inputs = list(tensors.values())
    refused = [f"{n.name!r} ({n.kind}: {_NO_INTEGER_KERNEL[n.kind]})" for n in graph.nodes
               if n.kind in _NO_INTEGER_KERNEL]  # fmt: skip
    if refused:
        raise ExportError(
            f"INT8 TFLite export of {q_model.name!r} is not possible: {'; '.join(refused)}. Use an activation "
            "TFLite runs in int8 (relu, relu6, leaky_relu, swish, hard_swish, gelu, sigmoid, tanh) and re-quantize, "
            "or export FAKELY_QUANT (float TFLite graph)."
        )
    folded = _foldable_affine_consumers(graph, consumers)
    split: set[int] = set()  # outputs of weighted layers converted in parts
    twins: dict[int, Any] = {}  # id of a q_model operation -> the layer computing it in the export model
    for node in graph.nodes:
        op, source = node.op, node.inputs[0] if node.inputs else None
        if node.name in folded and not isinstance(op, QuantizeWrapper):  # computed by the layer before it
            tensors[node.outputs[0]] = tensors[source]
            continue
        if id(op) in twins:  # a layer applied more than once keeps one twin (and one set of weights)
            twin = twins[id(op)]
        elif isinstance(op, ActivationQuantizer):
            twin = TFFakeQuantActivation(op)
        elif isinstance(op, FusedTensorRange):
            if tflite_fuses(op) and source not in split:
                tensors[node.outputs[0]] = tensors[source]
                continue
            after = _relu_output_quantizer(node, consumers)
            if after is not None:  # on the relu's output grid, the relu computes exactly as in Keras
                twin = TFFakeQuantActivation(after, name=op.name)
                if not _relu_exact(consumers[node.outputs[0]][0], after):
                    requantized.append(Requantization(
                        _layer_name(producers[source]),
                        "output stored on the grid of the relu6 after it, whose top level is not 6",
                    ))  # fmt: skip
            else:
                lo, hi = op.grid_range()
                twin = TFFakeQuantRange(lo, hi, name=op.name)
                requantized.append(Requantization(
                    _layer_name(producers[source]),
                    f"output stored as int8 on [{lo:.4g}, {hi:.4g}] (the platform fuses it into "
                    f"{op.consumer_kind or 'the next op'}; TFLite stores it)",
                ))  # fmt: skip
        elif isinstance(op, QuantizeWrapper):
            twin = TFQuantizedWeighted(op, int4_weights, folded.get(node.name, (1.0, 0.0)))
            if twin.split:  # a concatenation follows its parts: TFLite cannot fuse a relu into them
                split.add(node.outputs[0])
            if twin.requantized:
                requantized.append(Requantization(op.layer.name, twin.requantized))
        elif node.kind in LOWERINGS:
            twin = LoweredActivation(node.kind, name=node.name)
            after = _output_quantizer(node, consumers)
            low, high = CLIPPED_RANGE[node.kind]
            if after is None or not low <= grid_values(after)[0] <= grid_values(after)[-1] <= high:
                requantized.append(Requantization(
                    node.name, f"{node.kind} is lowered to an affine op clipped by its output grid, which is not "
                    f"inside [{low:g}, {high:g}] here",
                ))  # fmt: skip
        elif node.kind == "rsqrt":
            twin = InverseSqrtOfGrid(name=node.name)
            requantized.append(Requantization(node.name, (
                "rsqrt without the epsilon added first (TFLite's int8 RSQRT has none); differs only where the "
                "variance rounds to 0, and there both give the top of the output grid"
            )))  # fmt: skip
        elif isinstance(op, ShiftedActivation) and (after := _output_quantizer(node, consumers)) is not None:
            lo, hi, bits = storage_range(after)
            twin = ShiftedActivationOnGrid(op, lo, hi, bits, name=node.name)
            steps = op.shift / float(np.max(after.grid()[0]))
            if abs(steps - round(steps)) > 1e-3:
                requantized.append(Requantization(node.name, (
                    f"shift-negative correction's shift {op.shift:.4g} is {steps:.3f} steps of the output grid "
                    "(not a whole number: the grid's width changed after the shift was chosen); the activation is "
                    "rounded onto the moved grid, then once more onto the output grid"
                )))  # fmt: skip
        elif node.kind == "avg_pool" and _pool_as_depthwise(node, producers, consumers):
            twin = AveragePoolAsDepthwise(op.pool_size, op.strides, name=node.name)
        else:
            twin = op
        twins[id(op)] = twin
        outputs = twin(*resolve_refs(node.args, tensors), **resolve_refs(node.kwargs, tensors))
        grid = _carried_grid(node, producers, consumers)
        if grid is not None:  # make the grid the op passes on explicit (see _carried_grid)
            outputs = TFFakeQuantActivation(grid, name=f"{node.name}_carried_aq")(outputs)
        tensors.update(zip(node.outputs, keras.tree.flatten(outputs), strict=True))
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    model = keras.Model(model_inputs, resolve_refs(graph.outputs, tensors), name=q_model.name)
    return ExportGraph(
        model=model, requantized=requantized,
        sample_shapes={name: shape for tid, name in zip(graph.inputs, graph.input_names, strict=True)
                       if (shape := _sample_shape(graph, tid, consumers)) is not None},
        references=_references(graph, consumers),
        float_layers=[f"{n.name!r} ({type(n.op).__name__})" for n in graph.nodes if _kept_float(n)],
    )  # fmt: skip


_CARRIES_GRID = ("max_pool",)


def _carried_grid(
    node: Node, producers: dict[int, Node], consumers: dict[int, list[Node]]
) -> ActivationQuantizer | None:
    """The input grid a max pool passes on unchanged, where its output has no quantizer of its own.

    Left implicit, the converter infers the pool's output scale from its consumers; when one of them is an
    average pool with a different output grid (an Inception block's pool branch), it copies the max pool and
    leaves the copy and the convolutions reading it in float. Stated as a fake quant on the same grid (an
    identity on values already on it), every consumer sees one int8 tensor."""
    if node.kind not in _CARRIES_GRID or len(node.outputs) != 1:
        return None
    if any(isinstance(reader.op, ActivationQuantizer) for reader in consumers.get(node.outputs[0], [])):
        return None
    source = producers.get(node.inputs[0]) if node.inputs else None
    return source.op if source is not None and isinstance(source.op, ActivationQuantizer) else None


def _pool_as_depthwise(node: Node, producers: dict[int, Node], consumers: dict[int, list[Node]]) -> bool:
    """A 'valid' AveragePooling2D whose output grid differs from its input grid (see ``lowering``)."""
    op = node.op
    if not isinstance(op, keras.layers.AveragePooling2D) or op.padding != "valid":
        return False
    if op.data_format != "channels_last":
        return False
    source = producers.get(node.inputs[0]) if node.inputs else None
    grid, own = (source.op if source is not None else None), _output_quantizer(node, consumers)
    if not isinstance(grid, ActivationQuantizer) or own is None or grid.n_bits > 8:
        return False
    return grid.grid() != own.grid() or storage_range(grid) != storage_range(own)


def _kept_float(node: Node) -> bool:
    """A layer kerasq does not know (so it has no grid of its own), not one of kerasq's quantizers."""
    return node.kind is None and not isinstance(
        node.op, (ActivationQuantizer, FusedTensorRange, QuantizeWrapper, ShiftedActivation)
    )


def _input_quantizer(tensor: int, consumers: dict[int, list[Node]]) -> ActivationQuantizer | None:
    for reader in consumers.get(tensor, []):
        if isinstance(reader.op, ActivationQuantizer):
            return reader.op
    return None


def _sample_shape(graph: Graph, tensor: int, consumers: dict[int, list[Node]]) -> tuple[int, ...] | None:
    """A calibration sample's shape for a model input with unknown (non-batch) dimensions, else None."""
    quantizer = _input_quantizer(tensor, consumers)
    if quantizer is None or None not in graph.tensors[tensor].shape[1:]:
        return None
    return quantizer.sample_shape


def _references(graph: Graph, consumers: dict[int, list[Node]]) -> dict[str, np.ndarray]:
    """Model input name -> the calibration samples its quantizer keeps; empty unless every input has some."""
    references = {}
    for tid, name in zip(graph.inputs, graph.input_names, strict=True):
        quantizer = _input_quantizer(tid, consumers)
        if quantizer is None or quantizer.reference_inputs is None:
            return {}
        references[name] = keras.ops.convert_to_numpy(quantizer.reference_inputs)
    return references
