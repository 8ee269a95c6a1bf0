"""Resource figures of a quantization plan.

``resource_utilization(graph, plan)`` reports a plan's weights memory, activation memory (peak over the best
execution order), total memory and BOPs; definitions are in ``kerasq.config.resource_utilization``. Mixed
precision writes the same figures as rows of its integer program (``kerasq.mixed_precision.resource_rows``).

Weight bytes are counted by one function, ``kernel_bytes``: as MCT counts ``weights_memory`` (quantized kernels,
``params * bits / 8``) or as the device stores them (``packed=True``: whole bytes per kernel;
``stored_layer_bytes`` adds 4 bytes per bias and per weight left float, ``QuantizationInfo.stored_weights_bytes``
sums it). A layer applied several times counts its weights once.

Tensor sizes need every dimension but the batch. Dimensions the model leaves open (``Input((None, None, 3))``)
come from the calibration data's sample shapes, which ``with_sample_shapes`` records on the graph.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from kerasq.builder.model_builder import build_model
from kerasq.config.resource_utilization import ResourceUtilization
from kerasq.errors import ConfigError
from kerasq.graph.model_graph import Graph, Node, TensorInfo
from kerasq.graph.op_kinds import is_weighted
from kerasq.graph.weights import named_weights
from kerasq.plan import QuantizationPlan, grid_source
from kerasq.quantizers.weighted_kinds import WEIGHTED
from kerasq.resources.schedule import Schedule, Step, best_schedule

FLOAT_BITS = 32
BIAS_BITS = 32  # biases are int32 on the device (and float32 in float layers)


def kernel_bytes(params: Any, bits: Any, *, packed: bool = False) -> Any:
    """Bytes of ``params`` values of ``bits`` bits (broadcasts over arrays).

    ``packed=False``: ``params * bits / 8``, fractions kept, as MCT counts ``weights_memory``.
    ``packed=True``: whole bytes, as one kernel is stored bit-packed on the device.
    """
    size = np.multiply(params, bits, dtype=np.float64) / 8
    return np.ceil(size) if packed else size


# -- tensor shapes ---------------------------------------------------------------------------------------------


def with_sample_shapes(graph: Graph, batch: Sequence[np.ndarray]) -> Graph:
    """``graph`` with the per-sample shape of each model input in ``batch`` (one array per input: the first
    calibration batch): the sizes resource figures use where the model leaves dimensions open."""
    shapes = {tid: tuple(int(d) for d in np.shape(a)[1:]) for tid, a in zip(graph.inputs, batch, strict=True)}
    return replace(graph, sample_shapes=shapes)


def _used_tensors(graph: Graph) -> list[int]:
    """Model inputs and every tensor a node reads or writes (rewrites may leave unused entries behind)."""
    used = dict.fromkeys(graph.inputs)
    for node in graph.nodes:
        used.update(dict.fromkeys(node.inputs))
        used.update(dict.fromkeys(node.outputs))
    return list(used)


def _is_open(shape: Sequence[int | None]) -> bool:
    return any(d is None for d in shape[1:])


# (graph.tensors, input shapes, inferred shapes) of the last few replays, newest last
_INFERRED: list[tuple[dict, tuple, dict[int, tuple[int | None, ...]]]] = []
_INFERRED_KEPT = 4


def _inferred_shapes(graph: Graph, inputs: dict[int, tuple[int, ...]]) -> dict[int, tuple[int | None, ...]]:
    """Per-sample shape of every tensor when the model inputs have the ``inputs`` shapes (one symbolic replay of
    the graph, cached per tensor table: rewrites that change shapes give the graph a new one)."""
    key = tuple(sorted(inputs.items()))
    for tensors, k, shapes in _INFERRED:
        if tensors is graph.tensors and k == key:
            return shapes
    concrete = dict(graph.tensors)
    for tid, shape in inputs.items():
        concrete[tid] = TensorInfo(shape=(None, *shape), dtype=graph.tensors[tid].dtype)
    built = build_model(replace(graph, tensors=concrete))
    shapes = {tid: tuple(t.shape[1:]) for tid, t in built.tensors.items()}
    _INFERRED.append((graph.tensors, key, shapes))
    del _INFERRED[:-_INFERRED_KEPT]
    return shapes


def sample_shapes(graph: Graph) -> dict[int, tuple[int, ...]]:
    """Shape of every used tensor for one sample (batch dimension excluded), every dimension known.

    Open dimensions are inferred from ``graph.sample_shapes`` (the calibration data's input shapes). Raises
    ``ConfigError`` naming the input when the model leaves a dimension open and no data shape is known.
    """
    used = _used_tensors(graph)
    if not any(_is_open(graph.tensors[t].shape) for t in used):
        return {t: _known(graph.tensors[t].shape[1:]) for t in used}
    known = graph.sample_shapes or {}
    open_inputs = [
        (name, graph.tensors[t].shape)
        for t, name in zip(graph.inputs, graph.input_names, strict=True)
        if _is_open(graph.tensors[t].shape) and t not in known
    ]
    if open_inputs:
        name, shape = open_inputs[0]
        example = tuple(32 if d is None else d for d in shape[1:])
        raise ConfigError(
            f"Model input {name!r} has per-sample shape {shape[1:]}: its size is open, so activation memory "
            "and BOPs cannot be counted. Pass calibration data (keras_resource_utilization_data(model, "
            "representative_data_gen); quantization uses the representative data's sample shapes) or build the "
            f"model with a fixed input size, e.g. keras.Input({example})."
        )
    shapes = _inferred_shapes(graph, {t: known[t] for t in graph.inputs if t in known})
    result = {t: shapes.get(t, tuple(graph.tensors[t].shape[1:])) for t in used}
    still_open = [t for t in used if any(d is None for d in result[t])]
    if still_open:
        producer = graph.producers().get(still_open[0])
        where = f"the output of layer {producer.name!r}" if producer else f"tensor {still_open[0]}"
        raise ConfigError(
            f"{where} has shape {result[still_open[0]]} even at the calibration data's input shapes "
            f"{[known[t] for t in graph.inputs if t in known]}: its size depends on the data, so activation "
            "memory and BOPs cannot be counted. Give the layer a fixed output size (e.g. pad or crop to a fixed "
            "shape)."
        )
    return {t: _known(shape) for t, shape in result.items()}


def _known(shape: tuple[int | None, ...]) -> tuple[int, ...]:
    """``shape``, which the caller checked has every dimension known."""
    known = tuple(d for d in shape if d is not None)
    assert len(known) == len(shape), f"shape {shape} has an open dimension"
    return known


def tensor_elements(graph: Graph, shapes: Mapping[int, tuple[int, ...]] | None = None) -> dict[int, int]:
    """Elements per sample of every used tensor (batch dimension excluded)."""
    shapes = sample_shapes(graph) if shapes is None else shapes
    return {tid: int(np.prod(shape, dtype=np.int64)) for tid, shape in shapes.items()}


def _dtype_bits(dtype: str) -> int:
    return int(np.dtype(dtype).itemsize * 8)


def tensor_bits(graph: Graph, plan: QuantizationPlan) -> dict[int, float]:
    """Bit width each tensor is stored at on the device (0 inside fused chains, 32 for float tensors)."""
    bits: dict[int, float] = {}
    for tid, info in graph.tensors.items():
        if tid in plan.fused:
            bits[tid] = 0
            continue
        source = grid_source(plan, tid)
        if source is not None:
            bits[tid] = plan.activations[source].n_bits
        elif info.dtype.startswith(("float", "bfloat")):
            bits[tid] = FLOAT_BITS
        else:
            bits[tid] = _dtype_bits(info.dtype)
    return bits


def execution_steps(graph: Graph, plan: QuantizationPlan) -> list[Step]:
    """One step per fused chain (the device runs it as one kernel) or per node."""
    group = {node.name: node.name for node in graph.nodes}

    def find(name: str) -> str:
        while group[name] != name:
            group[name] = group[group[name]]
            name = group[name]
        return name

    producers, consumers = graph.producers(), graph.consumers()
    for tid in plan.fused:
        group[find(consumers[tid][0].name)] = find(producers[tid].name)
    members: dict[str, list[Node]] = {}
    for node in graph.nodes:
        members.setdefault(find(node.name), []).append(node)
    steps = []
    for root, nodes in members.items():
        written = {t for n in nodes for t in n.outputs}
        reads = tuple(dict.fromkeys(t for n in nodes for t in n.inputs if t not in written))
        writes = tuple(t for t in written if t not in plan.fused)
        steps.append(
            Step(
                name=root if len(nodes) == 1 else "+".join(n.name for n in nodes), reads=reads, writes=writes
            )
        )
    return steps


def activation_schedule(
    graph: Graph, plan: QuantizationPlan, bits: dict[int, float] | None = None
) -> Schedule:
    """The minimum-peak execution order for the plan's tensor widths (or ``bits``)."""
    bits = bits if bits is not None else tensor_bits(graph, plan)
    elements = tensor_elements(graph)
    sizes = {tid: elements[tid] * bits[tid] / 8 for tid in elements}
    return best_schedule(execution_steps(graph, plan), sizes, graph.inputs, graph.output_ids())


def macs(node: Node, graph: Graph, shapes: Mapping[int, tuple[int, ...]] | None = None) -> int:
    """Multiply-accumulates of one weighted node per sample (``shapes``: ``sample_shapes(graph)``)."""
    shapes = sample_shapes(graph) if shapes is None else shapes
    kernel = named_weights(node)
    size = sum(w.size for name, w in kernel.items() if name != "bias")
    per_input = WEIGHTED[node.known_kind].macs_per_input_position
    spatial_of = shapes[node.inputs[0] if per_input else node.outputs[0]]
    channels_first = node.layer_config.get("data_format") == "channels_first"
    spatial = spatial_of[1:] if channels_first else spatial_of[:-1]
    return int(size * np.prod(spatial, dtype=np.int64))


def kernel_bit_widths(plan: QuantizationPlan, node: str) -> dict[str, int]:
    """Kernel name -> bit width of ``node``'s quantized kernels (empty for a float node)."""
    return {k: spec.n_bits for k, spec in plan.weights.get(node, {}).items()}


def layer_kernel_bytes(node: Node, kernel_bits: Mapping[str, int]) -> float:
    """MCT's ``weights_memory`` of one layer: its quantized kernels (``kernel_bits``: name -> bits) at their
    bits; its bias and any float weight do not count."""
    weights = named_weights(node) if kernel_bits else {}
    return float(sum(kernel_bytes(weights[k].size, b) for k, b in kernel_bits.items()))


def weights_memory(graph: Graph, plan: QuantizationPlan) -> float:
    """Bytes of the quantized kernels at their bit widths, each layer once (MCT's ``weights_memory``)."""
    nodes = {node.name: node for node in graph.nodes}
    return math.fsum(
        layer_kernel_bytes(nodes[name], kernel_bit_widths(plan, name))
        for name in graph.layer_calls(plan.weights)
    )


def stored_layer_bytes(node: Node, kernel_bits: Mapping[str, int]) -> int:
    """Bytes one node's weights take on the device: quantized kernels bit-packed, biases int32, any other
    weight (of a float layer, or not quantized) float32."""
    weights: dict[Any, np.ndarray] = (
        named_weights(node) if kernel_bits else dict(enumerate(node.layer_weights))
    )
    packed = sum(kernel_bytes(weights[k].size, b, packed=True) for k, b in kernel_bits.items())
    bias = weights["bias"].size if kernel_bits and "bias" in weights else 0
    rest = sum(int(w.size) for k, w in weights.items() if k not in kernel_bits and k != "bias")
    return int(packed + kernel_bytes(bias, BIAS_BITS) + kernel_bytes(rest, FLOAT_BITS))


def node_weight_bits(plan: QuantizationPlan, node: Node) -> int:
    """The width of ``node``'s kernels (32 for a float node)."""
    kernels = plan.weights.get(node.name)
    return next(iter(kernels.values())).n_bits if kernels else FLOAT_BITS


def bops(graph: Graph, plan: QuantizationPlan, shapes: Mapping[int, tuple[int, ...]] | None = None) -> int:
    """Bit operations of every weighted node (every call of a shared layer)."""
    shapes = sample_shapes(graph) if shapes is None else shapes
    bits = tensor_bits(graph, plan)
    return int(
        sum(
            macs(node, graph, shapes) * node_weight_bits(plan, node) * bits[node.inputs[0]]
            for node in graph.nodes
            if is_weighted(node.kind)
        )
    )


def resource_utilization(graph: Graph, plan: QuantizationPlan) -> ResourceUtilization:
    """The four resource figures of ``plan`` at its bit widths."""
    shapes = sample_shapes(graph)
    weights = weights_memory(graph, plan)
    activations = activation_schedule(graph, plan).peak
    return ResourceUtilization(
        weights_memory=weights,
        activation_memory=activations,
        total_memory=weights + activations,
        bops=bops(graph, plan, shapes),
    )
