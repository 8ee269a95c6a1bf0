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

from kerasq.errors import ExportError
from kerasq.export.activation_twins import TFFakeQuantActivation, TFFakeQuantRange, grid_values, storage_range
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
from kerasq.export.weighted_twin import TFQuantizedWeighted
from kerasq.graph import read_model
from kerasq.graph.model_graph import Graph, Node, fresh_inputs, resolve_refs
from kerasq.layers import ShiftedActivation
from kerasq.quantizers import ActivationQuantizer, FusedTensorRange, QuantizeWrapper


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


# The largest kernel constant converted whole: TF 2.21's converter leaves a fake-quantized constant of 2**25
# elements or more in float, so larger kernels are converted in output-channel parts.
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
    consumers = graph.consumers()
    tensors: dict[int, Any] = fresh_inputs(graph)
    inputs = list(tensors.values())
    _refuse_float_activations(q_model.name, graph)
    requantized = _replay(graph, tensors, int4_weights)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    model = keras.Model(model_inputs, resolve_refs(graph.outputs, tensors), name=q_model.name)
    return ExportGraph(
        model=model, requantized=requantized,
        sample_shapes={name: shape for tid, name in zip(graph.inputs, graph.input_names, strict=True)
                       if (shape := _sample_shape(graph, tid, consumers)) is not None},
        references=_references(graph, consumers),
        float_layers=[f"{n.name!r} ({type(n.op).__name__})" for n in graph.nodes if _kept_float(n)],
    )  # fmt: skip


def _refuse_float_activations(model_name: str, graph: Graph) -> None:
    """Refuse, naming them, the activations the converter would leave in float (``_NO_INTEGER_KERNEL``)."""
    refused = [f"{n.name!r} ({n.kind}: {_NO_INTEGER_KERNEL[n.kind]})" for n in graph.nodes
               if n.kind in _NO_INTEGER_KERNEL]  # fmt: skip
    if refused:
        raise ExportError(
            f"INT8 TFLite export of {model_name!r} is not possible: {'; '.join(refused)}. Use an activation "
            "TFLite runs in int8 (relu, relu6, leaky_relu, swish, hard_swish, gelu, sigmoid, tanh) and re-quantize, "
            "or export FAKELY_QUANT (float TFLite graph)."
        )


def _replay(graph: Graph, tensors: dict[int, Any], int4_weights: bool) -> list[Requantization]:
    """Call each node's export twin on the export tensors of its inputs, in graph order, filling ``tensors``
    (graph tensor id -> export tensor); the places where the export graph requantizes, in node order."""
    producers, consumers = graph.producers(), graph.consumers()
    requantized: list[Requantization] = []
    folded = _foldable_affine_consumers(graph, consumers)
    split: set[int] = set()  # outputs of weighted layers converted in parts
    twins: dict[int, Any] = {}  # id of a q_model operation -> the layer computing it in the export model
    for node in graph.nodes:
        op = node.op
        if _passes_through(node, folded, id(op) in twins, split):
            tensors[node.outputs[0]] = tensors[node.inputs[0]]
            continue
        if id(op) in twins:  # a layer applied more than once keeps one twin (and one set of weights)
            twin = twins[id(op)]
        else:
            twin, notes = _new_twin(node, producers, consumers, folded, int4_weights)
            requantized.extend(notes)
            if isinstance(twin, TFQuantizedWeighted) and twin.split:  # a concatenation follows its parts:
                split.add(node.outputs[0])  # TFLite cannot fuse a relu into them
        twins[id(op)] = twin
        outputs = twin(*resolve_refs(node.args, tensors), **resolve_refs(node.kwargs, tensors))
        grid = _carried_grid(node, producers, consumers)
        if grid is not None:  # make the grid the op passes on explicit (see _carried_grid)
            outputs = TFFakeQuantActivation(grid, name=f"{node.name}_carried_aq")(outputs)
        tensors.update(zip(node.outputs, keras.tree.flatten(outputs), strict=True))
    return requantized


def _passes_through(node: Node, folded: dict[str, Any], has_twin: bool, split: set[int]) -> bool:
    """The node's output is its input's export tensor: an affine op or fused range folded into the weighted
    layer before it, or a fused range TFLite does not store either (``tflite_fuses``) unless the layer before
    it is converted in parts."""
    op = node.op
    if node.name in folded and not isinstance(op, QuantizeWrapper):  # computed by the layer before it
        return True
    return (
        not has_twin and isinstance(op, FusedTensorRange) and tflite_fuses(op) and node.inputs[0] not in split
    )


def _new_twin(
    node: Node,
    producers: dict[int, Node],
    consumers: dict[int, list[Node]],
    folded: dict[str, Any],
    int4_weights: bool,
) -> tuple[Any, list[Requantization]]:
    """The layer that computes ``node`` in the export model (the node's own op where TFLite takes it as it
    is), and the places where it requantizes."""
    op = node.op
    if isinstance(op, ActivationQuantizer):
        return TFFakeQuantActivation(op), []
    if isinstance(op, FusedTensorRange):
        return _stored_fused_range(node, op, producers, consumers)
    if isinstance(op, QuantizeWrapper):
        twin = TFQuantizedWeighted(
            op, int4_weights, folded.get(node.name, (1.0, 0.0)), max_kernel_elements=_MAX_KERNEL_ELEMENTS
        )
        return twin, [
            Requantization(tensor=op.layer.name, reason=twin.requantized)
        ] if twin.requantized else []
    if node.kind in LOWERINGS:
        return _lowered_activation(node, consumers)
    if node.kind == "rsqrt":
        return InverseSqrtOfGrid(name=node.name), [Requantization(tensor=node.name, reason=(
            "rsqrt without the epsilon added first (TFLite's int8 RSQRT has none); differs only where the "
            "variance rounds to 0, and there both give the top of the output grid"
        ))]  # fmt: skip
    if isinstance(op, ShiftedActivation) and (after := _output_quantizer(node, consumers)) is not None:
        return _shifted_on_grid(node, op, after)
    if node.kind == "avg_pool" and _pool_as_depthwise(node, producers, consumers):
        return AveragePoolAsDepthwise(op.pool_size, op.strides, name=node.name), []
    return op, []


def _stored_fused_range(
    node: Node, op: FusedTensorRange, producers: dict[int, Node], consumers: dict[int, list[Node]]
) -> tuple[Any, list[Requantization]]:
    """A tensor the platform fused but TFLite stores: on the grid of the relu after it when there is one (the
    relu then computes exactly as in Keras), else on the 8-bit grid recorded at quantization time."""
    after = _relu_output_quantizer(node, consumers)
    if after is not None:
        twin = TFFakeQuantActivation(after, name=op.name)
        if _relu_exact(consumers[node.outputs[0]][0], after):
            return twin, []
        return twin, [Requantization(
            tensor=_layer_name(producers[node.inputs[0]]),
            reason="output stored on the grid of the relu6 after it, whose top level is not 6",
        )]  # fmt: skip
    lo, hi = op.grid_range()
    return TFFakeQuantRange(lo, hi, name=op.name), [Requantization(
        tensor=_layer_name(producers[node.inputs[0]]),
        reason=f"output stored as int8 on [{lo:.4g}, {hi:.4g}] (the platform fuses it into "
        f"{op.consumer_kind or 'the next op'}; TFLite stores it)",
    )]  # fmt: skip


def _lowered_activation(node: Node, consumers: dict[int, list[Node]]) -> tuple[Any, list[Requantization]]:
    """An activation lowered to an affine op clipped by its output grid (``kerasq.export.lowering``); it
    requantizes unless that grid lies inside the activation's clipped range."""
    twin = LoweredActivation(node.known_kind, name=node.name)
    after = _output_quantizer(node, consumers)
    low, high = CLIPPED_RANGE[node.known_kind]
    if after is not None and low <= grid_values(after)[0] <= grid_values(after)[-1] <= high:
        return twin, []
    return twin, [Requantization(
        tensor=node.name, reason=f"{node.kind} is lowered to an affine op clipped by its output grid, which is not "
        f"inside [{low:g}, {high:g}] here",
    )]  # fmt: skip


def _shifted_on_grid(
    node: Node, op: ShiftedActivation, after: ActivationQuantizer
) -> tuple[Any, list[Requantization]]:
    """A shift-negative-corrected activation computed on its output grid ``after``; it requantizes when the
    shift is not a whole number of that grid's steps."""
    lo, hi, bits = storage_range(after)
    twin = ShiftedActivationOnGrid(op, lo, hi, bits, name=node.name)
    steps = op.shift / float(np.max(after.grid()[0]))
    if abs(steps - round(steps)) > 1e-3:
        return twin, [Requantization(tensor=node.name, reason=(
            f"shift-negative correction's shift {op.shift:.4g} is {steps:.3f} steps of the output grid "
            "(not a whole number: the grid's width changed after the shift was chosen); the activation is "
            "rounded onto the moved grid, then once more onto the output grid"
        ))]  # fmt: skip
    return twin, []


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
