"""The resource figures of ``kerasq.resources`` as linear rows of the mixed-precision integer program.

Each resource is a function of the units' candidate indices (every other tensor and kernel fixed at the plan's
bits): weights memory and BOPs are one row each, activation memory one row per cut of the execution schedule
(its peak is a maximum over cuts), total memory one row per cut plus the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kerasq.graph.model_graph import Graph
from kerasq.graph.op_kinds import is_weighted
from kerasq.mixed_precision.solver import ResourceRow
from kerasq.mixed_precision.units import Unit, unit_tensors
from kerasq.plan import QuantizationPlan, grid_source
from kerasq.resources.schedule import Schedule
from kerasq.resources.utilization import (
    activation_schedule,
    kernel_bit_widths,
    layer_kernel_bytes,
    macs,
    node_weight_bits,
    sample_shapes,
    tensor_bits,
    tensor_elements,
    weights_memory,
)

Terms = dict[int, np.ndarray]  # unit index -> the resource's value at each of its candidates


def _add(terms: Terms, unit: int, values: np.ndarray) -> None:
    terms[unit] = terms[unit] + values if unit in terms else np.asarray(values, np.float64)


def resource_rows(
    graph: Graph, plan: QuantizationPlan, units: Sequence[Unit], schedule: Schedule | None = None
) -> tuple[list[ResourceRow], Schedule]:
    """Rows of every resource as functions of the units' candidate indices (others fixed at plan bits).
    Activation memory is constrained at the cuts of ``schedule`` (default: the best order at the highest
    candidate widths)."""
    cand = [np.asarray(u.candidates, np.float64) for u in units]
    source_unit: dict[int | None, int] = {
        t: i for i, u in enumerate(units) if u.kind == "activation" for t in unit_tensors(plan, u)
    }
    tensor_unit = {t: source_unit.get(grid_source(plan, t)) for t in graph.tensors if t not in plan.fused}
    weights = _weights_row(graph, plan, units, cand)
    bits = tensor_bits(graph, plan)
    top_bits = {  # the highest candidate widths
        t: (units[u].candidates[0] if (u := tensor_unit.get(t)) is not None else b) for t, b in bits.items()
    }
    schedule = schedule or activation_schedule(graph, plan, top_bits)
    rows = [weights, *_memory_rows(graph, bits, schedule, tensor_unit, cand, weights)]
    rows.append(_bops_row(graph, plan, units, tensor_unit, cand, bits))
    return rows, schedule


def _weights_row(
    graph: Graph, plan: QuantizationPlan, units: Sequence[Unit], cand: list[np.ndarray]
) -> ResourceRow:
    """Weights memory: each layer once (a unit holds every call of its layer)."""
    terms: Terms = {}
    const = weights_memory(graph, plan)
    nodes = {node.name: node for node in graph.nodes}
    for i, unit in enumerate(units):
        if unit.kind != "weights":
            continue
        node = nodes[unit.weights_node]
        const -= layer_kernel_bytes(node, kernel_bit_widths(plan, unit.weights_node))
        terms[i] = layer_kernel_bytes(node, dict.fromkeys(plan.weights[unit.weights_node], 1)) * cand[i]
    return ResourceRow(resource="weights_memory", constant=const, terms=terms)


def _memory_rows(
    graph: Graph,
    bits: Mapping[int, float],
    schedule: Schedule,
    tensor_unit: Mapping[int, int | None],
    cand: list[np.ndarray],
    weights: ResourceRow,
) -> list[ResourceRow]:
    """Activation memory, one row per distinct cut of ``schedule``, and total memory (the same plus weights)."""
    elements = tensor_elements(graph, sample_shapes(graph))
    rows = []
    for cut in dict.fromkeys(schedule.cuts):
        const = 0.0
        terms: Terms = {}
        for t in cut:
            u = tensor_unit.get(t)
            if u is None:
                const += elements[t] * bits[t] / 8
            else:
                _add(terms, u, elements[t] * cand[u] / 8)
        rows.append(ResourceRow(resource="activation_memory", constant=const, terms=terms))
        total_terms = dict(weights.terms)
        for u, values in terms.items():
            _add(total_terms, u, values)
        rows.append(
            ResourceRow(resource="total_memory", constant=const + weights.constant, terms=total_terms)
        )
    return rows


def _bops_row(
    graph: Graph,
    plan: QuantizationPlan,
    units: Sequence[Unit],
    tensor_unit: Mapping[int, int | None],
    cand: list[np.ndarray],
    bits: Mapping[int, float],
) -> ResourceRow:
    """BOPs: weight bits x input-activation bits, a product where both are choices."""
    weight_unit = {name: i for i, u in enumerate(units) if u.kind == "weights" for name in u.nodes}
    shapes = sample_shapes(graph)
    const = 0.0
    terms: Terms = {}
    pairs: dict[tuple[int, int], np.ndarray] = {}
    for node in graph.nodes:
        if not is_weighted(node.kind):
            continue
        m = float(macs(node, graph, shapes))
        wu, au = weight_unit.get(node.name), tensor_unit.get(node.inputs[0])
        wb, ab = node_weight_bits(plan, node), bits[node.inputs[0]]
        if wu is not None and au is not None:
            key = (wu, au)
            pairs[key] = pairs.get(key, 0) + m * np.outer(cand[wu], cand[au])
        elif wu is not None:
            _add(terms, wu, m * ab * cand[wu])
        elif au is not None:
            _add(terms, au, m * wb * cand[au])
        else:
            const += m * wb * ab
    return ResourceRow(resource="bops", constant=const, terms=terms, pairs=pairs)
