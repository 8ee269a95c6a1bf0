"""Apply a ``BitWidthConfig`` to a plan: matched kernels / tensors get exactly the pinned width."""

from __future__ import annotations

from dataclasses import replace

from kerasq.config.config import BitWidthConfig, ManualBitWidth
from kerasq.errors import ConfigError
from kerasq.graph.model_graph import Graph
from kerasq.plan import QuantizationPlan, follow_grid_owners


def _pin_weights(plan: QuantizationPlan, node: str, bits: int) -> None:
    plan.weights[node] = {
        name: replace(spec, n_bits=bits, bit_candidates=(bits,)) for name, spec in plan.weights[node].items()
    }


def _pin_activations(plan: QuantizationPlan, producer: str, bits: int) -> bool:
    hit = False
    for tid, spec in list(plan.activations.items()):
        if spec.producer == producer:
            plan.activations[tid] = replace(spec, n_bits=bits, bit_candidates=(bits,))
            hit = True
    return hit


def _apply_rule(graph: Graph, plan: QuantizationPlan, rule: ManualBitWidth) -> list[str]:
    matched = []
    calls = graph.layer_calls()
    first_call = {call: first for first, names in calls.items() for call in names}
    for node in graph.nodes:
        if not rule.matches(node.name, type(node.op), node.kind):
            continue
        if rule.target == "weights" and node.name in plan.weights:
            for call in calls[first_call[node.name]]:  # every call of the layer: it has one kernel
                if call in plan.weights:
                    _pin_weights(plan, call, rule.bits)
            matched.append(node.name)
        elif rule.target == "activation" and _pin_activations(plan, node.name, rule.bits):
            matched.append(node.name)
    if rule.target == "activation" and rule.name is not None and _pin_activations(plan, rule.name, rule.bits):
        matched.append(rule.name)  # a model input, matched by its name
    return matched


def pin_bit_widths(graph: Graph, plan: QuantizationPlan, config: BitWidthConfig) -> QuantizationPlan:
    """A copy of ``plan`` with every rule of ``config`` applied (later rules win)."""
    pinned = replace(plan, activations=dict(plan.activations), weights=dict(plan.weights))
    for rule in config.rules:
        if not _apply_rule(graph, pinned, rule):
            what = "quantized kernels" if rule.target == "weights" else "a quantized output"
            candidates = (
                list(plan.weights)
                if rule.target == "weights"
                else list(dict.fromkeys(spec.producer for spec in plan.activations.values()))
            )
            raise ConfigError(
                f"BitWidthConfig rule {rule.describe()} ({rule.target}, {rule.bits} bits) matched no layer with "
                f"{what}; fix the selector or remove the rule. Layers it could name: {candidates[:20]}{' ...' if len(candidates) > 20 else ''}."
            )
    follow_grid_owners(pinned.activations)
    return pinned
