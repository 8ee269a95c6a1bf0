"""Choose a bit width per configurable unit under a resource target: the mixed-precision stage of PTQ.

units → resource rows (schedule cuts for activation memory) → feasibility check → sensitivity → integer program
(+ greedy raise where budget remains; under an activation or total memory budget, solved again in the execution
order best at the solution's widths) → joint check against uniform widths → plan at the chosen widths.
``configuration_overwrite`` skips the search.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from kerasq.config.config import MixedPrecisionQuantizationConfig
from kerasq.config.resource_utilization import ResourceUtilization
from kerasq.corrections.compensated_kernels import KernelCompensation
from kerasq.data import RepresentativeData
from kerasq.errors import ConfigError
from kerasq.graph.model_graph import Graph
from kerasq.mixed_precision.resource_rows import resource_rows
from kerasq.mixed_precision.sensitivity import (
    THREADS,
    Sensitivity,
    compute_sensitivity,
    search_candidate_grids,
)
from kerasq.mixed_precision.solver import (
    Choice,
    InfeasibleTargetError,
    MixedPrecisionProblem,
    evaluate,
    greedy_raise,
    min_reachable,
    solve,
)
from kerasq.mixed_precision.units import Unit, apply_bits, configurable_units
from kerasq.params.grid_cache import GridCache
from kerasq.plan import QuantizationPlan
from kerasq.resources.utilization import activation_schedule, resource_utilization

_WEIGHT_RESOURCES = ("weights_memory", "total_memory", "bops")
_ACTIVATION_RESOURCES = ("activation_memory", "total_memory", "bops")
_SCHEDULED = ("activation_memory", "total_memory")  # rows that depend on the execution order
_RESCHEDULES = 4  # solves with the order re-found at the previous solution's widths


@dataclass
class MixedPrecisionReport:
    """What mixed precision chose and why (part of ``QuantizationInfo``)."""

    units: list[str]  # "layer (weights)" / "layer (activation)", the order configuration_overwrite indexes
    candidates: list[tuple[int, ...]]
    choice: list[int]  # candidate index per unit
    bits: list[int]
    target: ResourceUtilization | None
    achieved: ResourceUtilization
    sensitivity: list[list[float]] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"mixed precision: target {self.target}, achieved {self.achieved}"]
        lines += [
            f"  {u:48s} {b:>2d} bits of {c}"
            for u, b, c in zip(self.units, self.bits, self.candidates, strict=True)
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class AllocationInputs:
    """What bit allocation reads of a model ready for quantization (``kerasq.pipeline.allocation_inputs``)."""

    graph: Graph  # rewritten, with every correction that changes the graph applied
    plan: QuantizationPlan  # at the platform's (and manual) widths
    grids: GridCache  # grids of every tensor and kernel, searched per width on demand
    data: RepresentativeData  # sensitivity runs on its first ``config.num_of_images`` samples
    config: MixedPrecisionQuantizationConfig
    input_means: dict[str, np.ndarray]  # bias correction's mean inputs, so candidates are measured corrected
    compensation: KernelCompensation | None  # low-bit kernels' compensated rounding, when PTQ applies it


def _fits(problem: MixedPrecisionProblem, choice: np.ndarray) -> bool:
    values = evaluate(problem, choice)
    return all(values[r] <= b * (1 + 1e-9) for r, b in problem.budgets.items())


@dataclass
class BitAllocator:
    """Units, resource rows and (lazily) sensitivity of one prepared model: solve many budgets cheaply."""

    inputs: AllocationInputs
    units: list[Unit]
    problem: MixedPrecisionProblem  # rows with activation memory in the order best at the highest widths
    sensitivity: Sensitivity | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, inputs: AllocationInputs, restricted: Sequence[str] | None) -> BitAllocator:
        """Units configurable for the ``restricted`` resources (all units when None)."""
        start = time.perf_counter()
        weights = restricted is None or any(r in restricted for r in _WEIGHT_RESOURCES)
        activations = restricted is None or any(r in restricted for r in _ACTIVATION_RESOURCES)
        units = configurable_units(inputs.graph, inputs.plan, weights=weights, activations=activations)
        rows, _ = resource_rows(inputs.graph, inputs.plan, units)
        zeros = [np.zeros(len(u.candidates)) for u in units]
        problem = MixedPrecisionProblem(sensitivity=zeros, rows=rows, budgets={})
        return cls(
            inputs=inputs, units=units, problem=problem, seconds={"resources": time.perf_counter() - start}
        )

    def reachable(self, resource: str) -> float:
        """The smallest value of ``resource`` the platform's candidates allow. Activation and total memory
        only shrink with the widths, so their minimum is at the lowest candidates in the order best there,
        which can be below what any choice reaches in the order best at the highest widths."""
        value = min_reachable(self.problem, resource)
        if resource in _SCHEDULED:
            lowest = self._lowest()
            value = min(value, evaluate(self._problem_at(lowest, {}), lowest)[resource])
        return value

    def check_feasible(self, target: ResourceUtilization) -> None:
        for resource, requested in target.restricted().items():
            reachable = self.reachable(resource)
            if requested < reachable * (1 - 1e-9):
                raise InfeasibleTargetError(resource, requested, reachable)

    def ensure_sensitivity(self) -> Sensitivity:
        if self.sensitivity is None:
            p = self.inputs
            mp = p.config
            samples = p.data.take(mp.num_of_images)
            start = time.perf_counter()
            search_candidate_grids(p.plan, self.units, p.grids)
            self.seconds["grids"] = time.perf_counter() - start
            self.sensitivity = compute_sensitivity(
                p.graph, p.plan, self.units, p.grids, samples, mp, p.input_means
            )
            self.seconds["sensitivity"] = self.sensitivity.seconds
        return self.sensitivity

    def solve(self, target: ResourceUtilization) -> np.ndarray:
        self.check_feasible(target)
        budgets = target.restricted()
        problem = MixedPrecisionProblem(
            sensitivity=self.ensure_sensitivity().values, rows=self.problem.rows, budgets=budgets
        )
        start = time.perf_counter()
        if any(r in budgets for r in _SCHEDULED):
            choice, problem = self._solve_rescheduled(problem)
        else:
            choice = self._solve_rows(problem)
        self.seconds["solve"] = time.perf_counter() - start
        return self._best_of(problem, choice)

    def _lowest(self) -> np.ndarray:
        return np.array([len(u.candidates) - 1 for u in self.units], int)

    def _problem_at(self, choice: Choice, budgets: dict[str, float]) -> MixedPrecisionProblem:
        """The problem with activation memory constrained at the cuts of the order best at ``choice``'s widths
        (``choice``'s value there is the activation memory its model reports)."""
        p = self.inputs
        schedule = activation_schedule(p.graph, self.plan_for(choice))
        rows = resource_rows(p.graph, p.plan, self.units, schedule=schedule)[0]
        values = self.problem.sensitivity if self.sensitivity is None else self.sensitivity.values
        return MixedPrecisionProblem(sensitivity=values, rows=rows, budgets=budgets)

    def _solve_rows(self, problem: MixedPrecisionProblem) -> np.ndarray:
        choice = solve(problem)
        if self.inputs.config.refine_after_solve:
            choice = greedy_raise(problem, choice)
        return np.asarray(choice, int)

    def _solve_rescheduled(self, problem: MixedPrecisionProblem) -> tuple[np.ndarray, MixedPrecisionProblem]:
        """Activation memory is a maximum over the cuts of one execution order, and the best order depends on
        the widths. Solve in the order best at the highest widths and in the one best at the lowest, and from
        each, re-find the order at the solution's widths and solve again while the summed sensitivity drops.
        A solution counts only if it meets the budgets in its own order (the one its model reports); the
        cheapest such is returned with its problem."""

        def cost(c: np.ndarray) -> float:
            return float(sum(s[k] for s, k in zip(problem.sensitivity, c, strict=True)))

        budgets = dict(problem.budgets)
        best: tuple[np.ndarray, MixedPrecisionProblem] | None = None
        for start in (problem, self._problem_at(self._lowest(), budgets)):
            current, previous = start, None
            for _ in range(_RESCHEDULES):
                try:
                    choice = self._solve_rows(current)
                except InfeasibleTargetError:  # this order cannot reach the budget
                    break
                if previous is not None and cost(choice) >= cost(previous) - 1e-12:
                    break
                own = self._problem_at(choice, budgets)
                if _fits(own, choice) and (best is None or cost(choice) < cost(best[0]) - 1e-12):
                    best = (choice, own)
                current, previous = own, choice
        if best is None:
            raise InfeasibleTargetError(
                "+".join(budgets), np.nan, np.nan,
                f"budgets {budgets}: no bit-width choice meeting them in its own execution order was found; "
                "raise the activation_memory / total_memory budget",
            )  # fmt: skip
        return best

    def _best_of(self, problem: MixedPrecisionProblem, choice: np.ndarray) -> np.ndarray:
        """Guard against the additive model's blind spot: per-unit sensitivities assume errors add up, which
        fails when several units drop at once. Measure the solution and every uniform configuration that fits
        the budget (in its own execution order) jointly, one full pass each on the sensitivity samples, with
        the kernels PTQ will give them (error-compensated rounding where it applies), and keep the closest to
        float."""
        start = time.perf_counter()
        scheduled = any(r in problem.budgets for r in _SCHEDULED)
        options = [choice]
        for k in range(1, max((len(u.candidates) for u in self.units), default=1)):
            uniform = np.array([min(k, len(u.candidates) - 1) for u in self.units])
            own = self._problem_at(uniform, dict(problem.budgets)) if scheduled else problem
            if _fits(own, uniform) and not (uniform == choice).all():
                options.append(uniform)
        if len(options) > 1:
            p, sens = self.inputs, self.ensure_sensitivity()

            def distance(option: np.ndarray) -> float:
                plan = self.plan_for(option)
                kernels = p.compensation.kernels(p.grids.params_for(plan)) if p.compensation else None
                return sens.joint_distance(p.graph, plan, p.grids, kernels)

            if p.compensation is not None:  # its statistics once, before the passes run side by side
                for option in options:
                    p.compensation.kernels(p.grids.params_for(self.plan_for(option)))
            with ThreadPoolExecutor(THREADS) as pool:  # one full pass each, independent
                distances = list(pool.map(distance, options))
            choice = options[int(np.argmin(distances))]
            self.seconds["check"] = time.perf_counter() - start
        return choice

    def plan_for(self, choice: Choice) -> QuantizationPlan:
        bits = [u.candidates[c] for u, c in zip(self.units, choice, strict=True)]
        return apply_bits(self.inputs.plan, self.units, bits)

    def report(self, choice: Choice, target: ResourceUtilization | None) -> MixedPrecisionReport:
        plan = self.plan_for(choice)
        return MixedPrecisionReport(
            units=[u.label for u in self.units],
            candidates=[u.candidates for u in self.units],
            choice=[int(c) for c in choice],
            bits=[u.candidates[c] for u, c in zip(self.units, choice, strict=True)],
            target=target,
            achieved=resource_utilization(self.inputs.graph, plan),
            sensitivity=None
            if self.sensitivity is None
            else [list(map(float, v)) for v in self.sensitivity.values],
            seconds=dict(self.seconds),
        )


def check_overwrite(overwrite: Sequence[int], units: Sequence[Unit]) -> np.ndarray:
    """Validate ``configuration_overwrite`` against the configurable units."""
    if len(overwrite) != len(units):
        listing = ", ".join(f"{i}: {u.label} {u.candidates}" for i, u in enumerate(units[:30]))
        raise ConfigError(
            f"MixedPrecisionQuantizationConfig.configuration_overwrite has {len(overwrite)} entries but the model "
            f"has {len(units)} configurable units; give one candidate index per unit (0 = highest bits): {listing}"
            f"{' ...' if len(units) > 30 else ''}."
        )
    for i, (index, unit) in enumerate(zip(overwrite, units, strict=True)):
        if not 0 <= index < len(unit.candidates):
            raise ConfigError(
                f"MixedPrecisionQuantizationConfig.configuration_overwrite[{i}]={index} is out of range for {unit.label}: it has "
                f"{len(unit.candidates)} candidates {unit.candidates} (use an index in 0..{len(unit.candidates) - 1})."
            )
    return np.asarray(overwrite, int)


def allocate_bits(
    inputs: AllocationInputs, target: ResourceUtilization | None
) -> tuple[QuantizationPlan, MixedPrecisionReport]:
    """The plan at the widths the target (or ``configuration_overwrite``) asks for, and the report."""
    if target is not None and not isinstance(target, ResourceUtilization):
        raise ConfigError(
            "target_resource_utilization must be a kerasq.core.ResourceUtilization, e.g. "
            f"ResourceUtilization(weights_memory=200_000); got {type(target).__name__}."
        )
    overwrite = inputs.config.configuration_overwrite
    restricted = None if target is None else list(target.restricted())
    allocator = BitAllocator.create(inputs, restricted)
    if overwrite is not None:
        choice = check_overwrite(overwrite, allocator.units)
    elif target is None:
        raise ConfigError(
            "allocate_bits needs a target_resource_utilization or a "
            "MixedPrecisionQuantizationConfig.configuration_overwrite; got neither."
        )
    elif not target.restricted():
        choice = np.zeros(len(allocator.units), int)
    else:
        choice = allocator.solve(target)
    return allocator.plan_for(choice), allocator.report(choice, target)
