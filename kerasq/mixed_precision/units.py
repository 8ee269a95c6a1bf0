"""Configurable units: the choices mixed precision makes (a layer's kernels, or one activation grid).

A layer applied several times (a shared layer, or the layers of a nested model called twice) has one kernel, so
its calls form one weights unit: one bit width for all of them, named after the first call.

Order (what ``configuration_overwrite`` indexes): model inputs first, then graph order; for each node its
kernels' unit (at the layer's first call only), then the unit of each output tensor with its own grid.
Candidate index 0 is the highest width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from kerasq.graph.model_graph import Graph
from kerasq.plan import QuantizationPlan, follow_grid_owners


@dataclass(frozen=True)
class Unit:
    """One bit-width choice.

    Attributes:
        kind: "weights" (all kernels of ``node``, at every call of its layer) or "activation" (the grid of
            ``tensor`` and of the tensors that share it).
        name: node name (weights) or producer name (activation), as users see it in reports.
        candidates: bit widths, highest first.
        node: the layer's first call (weights units).
        calls: every node calling the layer, ``node`` first (weights units; empty: just ``node``).
    """

    kind: str
    name: str
    candidates: tuple[int, ...]
    node: str | None = None
    tensor: int | None = None
    calls: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes whose kernels a weights unit sets (``calls``, or just ``node``)."""
        return self.calls or ((self.node,) if self.node is not None else ())

    @property
    def weights_node(self) -> str:
        """``node`` of a weights unit (``configurable_units`` always sets it)."""
        assert self.node is not None, f"{self.label}: a weights unit without a node"
        return self.node

    @property
    def grid_tensor(self) -> int:
        """``tensor`` of an activation unit (``configurable_units`` always sets it)."""
        assert self.tensor is not None, f"{self.label}: an activation unit without a tensor"
        return self.tensor

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"


def configurable_units(
    graph: Graph, plan: QuantizationPlan, *, weights: bool = True, activations: bool = True
) -> list[Unit]:
    """Units with more than one candidate, of the requested kinds, in the documented order."""
    units = []
    calls = graph.layer_calls(plan.weights) if weights else {}

    def add_activation(tensor: int) -> None:
        spec = plan.activations.get(tensor)
        if activations and spec is not None and spec.shared_owner is None and len(spec.bit_candidates) > 1:
            units.append(
                Unit(kind="activation", name=spec.producer, candidates=spec.bit_candidates, tensor=tensor)
            )

    for tensor in graph.inputs:
        add_activation(tensor)
    for node in graph.nodes:
        if node.name in calls and plan.weights[node.name]:  # a layer's first call (its calls share widths)
            candidates = next(iter(plan.weights[node.name].values())).bit_candidates
            if len(candidates) > 1:
                units.append(
                    Unit(
                        kind="weights",
                        name=node.name,
                        candidates=candidates,
                        node=node.name,
                        calls=calls[node.name],
                    )
                )
        for tensor in node.outputs:
            add_activation(tensor)
    return units


def apply_bits(plan: QuantizationPlan, units: Sequence[Unit], bits: Sequence[int]) -> QuantizationPlan:
    """A copy of ``plan`` with unit ``i`` at ``bits[i]`` (tensors sharing a grid follow it)."""
    if len(bits) != len(units):
        raise ValueError(f"apply_bits: {len(units)} units but {len(bits)} bit widths.")
    new = replace(plan, activations=dict(plan.activations), weights=dict(plan.weights))
    for unit, b in zip(units, bits, strict=True):
        if unit.kind == "weights":
            for name in unit.nodes:  # every call of the layer: one kernel, one width
                new.weights[name] = {k: replace(s, n_bits=b) for k, s in new.weights[name].items()}
        else:
            new.activations[unit.grid_tensor] = replace(new.activations[unit.grid_tensor], n_bits=b)
    follow_grid_owners(new.activations)
    return new


def unit_tensors(plan: QuantizationPlan, unit: Unit) -> list[int]:
    """Tensors whose grid an activation unit sets (its own and those sharing it)."""
    return [unit.grid_tensor] + [t for t, s in plan.activations.items() if s.shared_owner == unit.tensor]
