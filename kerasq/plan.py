"""The plan data model every stage after planning reads: what is quantized, at which widths, on which grids.

``QuantizationPlan`` is decided before any data is seen (platform + manual bits) and names activation tensors by
their graph tensor id and kernels by node name -> kernel name; ``QuantizationParams`` holds the grids chosen for
it, keyed the same way. Every stage after planning keeps both keys stable: rewrites that run later (shift-negative
correction) return a new plan with the ids they create.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field, replace

from kerasq.config.enums import QuantizationMethod
from kerasq.quantizers.grid import HALF_TO_EVEN, QuantParams


@dataclass(frozen=True)
class ActivationSpec:
    """An activation quantizer to insert on one tensor."""

    tensor: int
    producer: str  # node name, or the input name for model inputs
    n_bits: int
    method: QuantizationMethod
    signedness: str  # "auto" | "signed" | "unsigned"
    bit_candidates: tuple[int, ...]
    fixed_range: tuple[float, float] | None = None  # imposed by the platform; no search
    shares_grid_of: int | None = None  # takes the grid of this tensor (e.g. the concat it feeds)
    rounding: str = HALF_TO_EVEN  # where ties go (kerasq.quantizers.grid): the device's rule if it has one


@dataclass(frozen=True)
class WeightSpec:
    """A kernel quantizer for one kernel of a weighted node."""

    node: str
    kernel: str
    n_bits: int
    method: QuantizationMethod
    axes: tuple[int, ...]  # non-negative kernel axes holding channels; () = per-tensor
    narrow_range: bool
    bit_candidates: tuple[int, ...]


@dataclass
class QuantizationPlan:
    activations: dict[int, ActivationSpec] = field(default_factory=dict)
    weights: dict[str, dict[str, WeightSpec]] = field(default_factory=dict)
    float_nodes: dict[str, str] = field(default_factory=dict)  # node name -> why it stays float
    fused: set[int] = field(default_factory=set)  # tensors inside a fused chain: never materialized on device
    inherits: dict[int, int] = field(default_factory=dict)  # output of a grid-preserving op -> its input


def inherited_from(inherits: dict[int, int], tensor: int, quantized: Container[int]) -> int:
    """``tensor``, or the first tensor in ``quantized`` up its chain of grid-preserving ops (``inherits``, a
    plan's): the one whose grid it is on (the last one reached when none is quantized)."""
    seen = set()
    while tensor not in quantized and tensor in inherits and tensor not in seen:
        seen.add(tensor)
        tensor = inherits[tensor]
    return tensor


def follow_grid_owners(activations: dict[int, ActivationSpec]) -> None:
    """Tensors that take another tensor's grid (``shares_grid_of``) take its width and candidates too, in
    place: one grid has one width."""
    for tid, spec in activations.items():
        if spec.shares_grid_of is not None:
            owner = activations[spec.shares_grid_of]
            activations[tid] = replace(spec, n_bits=owner.n_bits, bit_candidates=owner.bit_candidates)


def grid_source(plan: QuantizationPlan, tensor: int) -> int | None:
    """The tensor whose quantizer sets ``tensor``'s grid (through preserving ops and shared grids); None = float."""
    tensor = inherited_from(plan.inherits, tensor, plan.activations)
    spec = plan.activations.get(tensor)
    if spec is None:
        return None
    return spec.shares_grid_of if spec.shares_grid_of is not None else tensor


@dataclass
class QuantizationParams:
    """Chosen grids: per activation tensor id, and per node name -> kernel name.

    ``fused``: an 8-bit uniform grid for each tensor inside a fused chain (not quantized by the platform),
    for runtimes that store it anyway (see ``FusedTensorRange``).
    """

    activations: dict[int, QuantParams]
    weights: dict[str, dict[str, QuantParams]]
    fused: dict[int, QuantParams] = field(default_factory=dict)
