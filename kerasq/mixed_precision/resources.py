"""Resource figures of a quantization plan, and the same figures as linear rows of the bit choices.

``resource_utilization(graph, plan)`` reports a plan's weights memory, activation memory (peak over the best
execution order), total memory and BOPs; definitions are in ``kerasq.core.resource_utilization``.
``resource_rows(graph, plan, units)`` expresses each resource as rows of the mixed-precision integer program:
weights memory and BOPs are one row each, activation memory one row per cut of the execution schedule (its
peak is a maximum over cuts), total memory one row per cut plus the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kerasq.core.config import CoreConfig
from kerasq.core.resource_utilization import ResourceUtilization
from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import is_weighted
from kerasq.graph.weights import named_weights
from kerasq.mixed_precision.schedule import Schedule, Step, best_schedule
from kerasq.mixed_precision.solver import ResourceRow
from kerasq.mixed_precision.units import Unit, unit_tensors
from kerasq.platform.assign import QuantizationPlan, grid_source

FLOAT_BITS = 32


def tensor_elements(graph: Graph) -> dict[int, int]:
    """Elements per sample of every tensor (batch dimension excluded)."""
    return {tid: int(np.prod([d or 1 for d in info.shape[1:]])) for tid, info in graph.tensors.items()}


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
        steps.append(Step(root if len(nodes) == 1 else "+".join(n.name for n in nodes), reads, writes))
    return steps


def activation_schedule(
    graph: Graph, plan: QuantizationPlan, bits: dict[int, float] | None = None
) -> Schedule:
    """The minimum-peak execution order for the plan's tensor widths (or ``bits``)."""
    bits = bits if bits is not None else tensor_bits(graph, plan)
    elements = tensor_elements(graph)
    sizes = {tid: elements[tid] * bits[tid] / 8 for tid in graph.tensors}
    return best_schedule(execution_steps(graph, plan), sizes, graph.inputs, graph.output_ids())


def macs(node: Node, graph: Graph) -> int:
    """Multiply-accumulates of one weighted node per sample."""
    kernel = named_weights(node)
    size = sum(w.size for name, w in kernel.items() if name != "bias")
    spatial_of = graph.tensors[node.inputs[0] if node.kind == "conv_transpose" else node.outputs[0]].shape
    channels_first = node.layer_config.get("data_format") == "channels_first"
    spatial = spatial_of[2:] if channels_first else spatial_of[1:-1]
    return int(size * np.prod([d or 1 for d in spatial]))


def _kernel_sizes(graph: Graph, plan: QuantizationPlan, node: str) -> list[int]:
    weights = named_weights(graph.node(node))
    return [weights[k].size for k in plan.weights[node]]


def layer_weight_bytes(node: Node, kernel_bits: Mapping[str, int]) -> int:
    """Bytes of one node's weights: quantized kernels packed at their bits, everything else float32."""
    if not kernel_bits:
        return sum(int(w.size) for w in node.layer_weights) * FLOAT_BITS // 8
    weights = named_weights(node)
    packed = sum(math.ceil(weights[k].size * bits / 8) for k, bits in kernel_bits.items())
    return packed + sum(int(w.size) for k, w in weights.items() if k not in kernel_bits) * FLOAT_BITS // 8


def weights_bytes(graph: Graph, plan: QuantizationPlan) -> int:
    return sum(
        layer_weight_bytes(node, {k: s.n_bits for k, s in plan.weights.get(node.name, {}).items()})
        for node in graph.nodes
    )


def _weight_bits(plan: QuantizationPlan, node: Node) -> int:
    kernels = plan.weights.get(node.name)
    return next(iter(kernels.values())).n_bits if kernels else FLOAT_BITS


def bops(graph: Graph, plan: QuantizationPlan) -> int:
    bits = tensor_bits(graph, plan)
    return int(
        sum(
            macs(node, graph) * _weight_bits(plan, node) * bits[node.inputs[0]]
            for node in graph.nodes
            if is_weighted(node.kind)
        )
    )


def resource_utilization(graph: Graph, plan: QuantizationPlan) -> ResourceUtilization:
    """The four resource figures of ``plan`` at its bit widths."""
    weights = weights_bytes(graph, plan)
    activations = activation_schedule(graph, plan).peak
    return ResourceUtilization(
        weights_memory=weights,
        activation_memory=activations,
        total_memory=weights + activations,
        bops=bops(graph, plan),
    )


def _add(terms: dict[int, np.ndarray], unit: int, values: np.ndarray) -> None:
    terms[unit] = terms[unit] + values if unit in terms else np.asarray(values, np.float64)


def resource_rows(
    graph: Graph, plan: QuantizationPlan, units: Sequence[Unit], schedule: Schedule | None = None
) -> tuple[list[ResourceRow], Schedule]:
    """Rows of every resource as functions of the units' candidate indices (others fixed at plan bits).
    Activation memory is constrained at the cuts of ``schedule`` (default: the best order at the highest
    candidate widths)."""
    cand = [np.asarray(u.candidates, np.float64) for u in units]
    weight_unit = {u.node: i for i, u in enumerate(units) if u.kind == "weights"}
    source_unit = {t: i for i, u in enumerate(units) if u.kind == "activation" for t in unit_tensors(plan, u)}
    elements = tensor_elements(graph)
    bits = tensor_bits(graph, plan)

    # weights memory
    w_terms: dict[int, np.ndarray] = {}
    w_const = float(weights_bytes(graph, plan))
    for node, i in weight_unit.items():
        sizes = _kernel_sizes(graph, plan, node)
        w_const -= sum(
            math.ceil(s * plan.weights[node][k].n_bits / 8)
            for s, k in zip(sizes, plan.weights[node], strict=True)
        )
        w_terms[i] = np.array(
            [sum(math.ceil(s * b / 8) for s in sizes) for b in units[i].candidates], np.float64
        )
    rows = [ResourceRow("weights_memory", w_const, w_terms)]

    # activation memory: schedule at the highest candidate widths, one row per distinct cut
    tensor_unit = {t: source_unit.get(grid_source(plan, t)) for t in graph.tensors if t not in plan.fused}
    top_bits = {
        t: (units[u].candidates[0] if (u := tensor_unit.get(t)) is not None else b) for t, b in bits.items()
    }
    schedule = schedule or activation_schedule(graph, plan, top_bits)
    for cut in dict.fromkeys(schedule.cuts):
        const, terms = 0.0, {}
        for t in cut:
            u = tensor_unit.get(t)
            if u is None:
                const += elements[t] * bits[t] / 8
            else:
                _add(terms, u, elements[t] * cand[u] / 8)
        rows.append(ResourceRow("activation_memory", const, terms))
        total_terms = dict(w_terms)
        for u, values in terms.items():
            _add(total_terms, u, values)
        rows.append(ResourceRow("total_memory", const + w_const, total_terms))

    # BOPs: weight bits x input-activation bits, a product where both are choices
    b_const, b_terms, b_pairs = 0.0, {}, {}
    for node in graph.nodes:
        if not is_weighted(node.kind):
            continue
        m = float(macs(node, graph))
        wu, au = weight_unit.get(node.name), tensor_unit.get(node.inputs[0])
        wb, ab = _weight_bits(plan, node), bits[node.inputs[0]]
        if wu is not None and au is not None:
            key = (wu, au)
            b_pairs[key] = b_pairs.get(key, 0) + m * np.outer(cand[wu], cand[au])
        elif wu is not None:
            _add(b_terms, wu, m * ab * cand[wu])
        elif au is not None:
            _add(b_terms, au, m * wb * cand[au])
        else:
            b_const += m * wb * ab
    rows.append(ResourceRow("bops", b_const, b_terms, b_pairs))
    return rows, schedule


def keras_resource_utilization_data(
    in_model: Any,
    representative_data_gen: Any = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: Any = None,
) -> ResourceUtilization:
    """Resource figures of ``in_model`` quantized at the platform's default bit widths (and manual bits).

    The figures depend only on the model, the platform and the configs: ``representative_data_gen`` is
    accepted for MCT compatibility and only checked against the model's inputs.
    """
    from kerasq.ptq import plan_model  # the pipeline's first stages

    graph, plan = plan_model(in_model, representative_data_gen, core_config, target_platform_capabilities)
    return resource_utilization(graph, plan)
