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
class SearchedGrid:
    """The grid is searched on the tensor's observed histogram (the default)."""


@dataclass(frozen=True)
class FixedGrid:
    """The grid covers a range decided before any search: the platform's (a device's sigmoid or tanh output
    grid) or shift-negative correction's (the shifted activation's unsigned range)."""

    lo: float
    hi: float
    imposed_by: str  # "platform" | "shift_negative_correction"


@dataclass(frozen=True)
class SharedGrid:
    """The tensor is quantized on the grid of ``owner``, a tensor with a grid of its own (every input of a
    concatenation on a device that concatenates in integers; an average pool's output on its input's grid)."""

    owner: int


GridSource = SearchedGrid | FixedGrid | SharedGrid
SEARCHED = SearchedGrid()


@dataclass(frozen=True)
class ActivationSpec:
    """An activation quantizer to insert on one tensor."""

    tensor: int
    producer: str  # node name, or the input name for model inputs
    n_bits: int
    method: QuantizationMethod
    signedness: str  # "auto" | "signed" | "unsigned"
    bit_candidates: tuple[int, ...]
    grid: GridSource = SEARCHED  # where the grid comes from: searched, fixed in advance, or another tensor's
    rounding: str = HALF_TO_EVEN  # where ties go (kerasq.quantizers.grid): the device's rule if it has one

    @property
    def shared_owner(self) -> int | None:
        """The tensor whose grid this one takes; None when it has a grid of its own."""
        return self.grid.owner if isinstance(self.grid, SharedGrid) else None


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
    """Tensors that take another tensor's grid (``SharedGrid``) take its width and candidates too, in place:
    one grid has one width."""
    for tid, spec in activations.items():
        if spec.shared_owner is not None:
            owner = activations[spec.shared_owner]
            activations[tid] = replace(spec, n_bits=owner.n_bits, bit_candidates=owner.bit_candidates)


def range_is_fixed(plan: QuantizationPlan, spec: ActivationSpec) -> bool:
    """Whether ``spec``'s grid is fixed before any search: its own (``FixedGrid``) or the one it shares."""
    owner = spec.shared_owner
    grid = spec.grid if owner is None else plan.activations[owner].grid
    return isinstance(grid, FixedGrid)


def grid_source(plan: QuantizationPlan, tensor: int) -> int | None:
    """The tensor whose quantizer sets ``tensor``'s grid (through preserving ops and shared grids); None = float."""
    tensor = inherited_from(plan.inherits, tensor, plan.activations)
    spec = plan.activations.get(tensor)
    if spec is None:
        return None
    return spec.shared_owner if spec.shared_owner is not None else tensor


@dataclass
class QuantizationParams:
    """Chosen grids: per activation tensor id, and per node name -> kernel name.

    ``fused``: an 8-bit uniform grid for each tensor inside a fused chain (not quantized by the platform),
    for runtimes that store it anyway (see ``FusedTensorRange``).
    """

    activations: dict[int, QuantParams]
    weights: dict[str, dict[str, QuantParams]]
    fused: dict[int, QuantParams] = field(default_factory=dict)
