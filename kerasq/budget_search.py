"""Accuracy-target search: the smallest budget whose mixed-precision model still meets a quality target.

Sensitivity is measured once; every probed budget is one integer program (milliseconds) plus one evaluation.
Bisection over the budget needs about ``log2(1 / relative_tolerance)`` evaluations, independent of the number
of layers (a greedy layer-by-layer search, as in Quark's auto mixed precision, needs one per layer).

Quality targets: ``max_accuracy_drop`` with ``evaluate_fn(model) -> float`` (higher is better, e.g. top-1 %),
or ``target_output_distance``: the mean relative L2 distance ``||q(x) - f(x)|| / ||f(x)||`` between quantized and
float model outputs, on samples the quantization never saw (``held_out_data``, or the last fifth of the
representative data, which calibration then does without).

Quality need not fall monotonically with the budget (the solver's additive model, rounding and clipping make
it jagged), so the search probes the highest and the lowest budget first, bisects between them, and returns
the smallest probed budget that met the target, whatever was probed after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import keras
import numpy as np

from kerasq.config.config import CoreConfig
from kerasq.config.resource_utilization import RESOURCES, ResourceUtilization
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.errors import ConfigError, DataError
from kerasq.info import QuantizationInfo
from kerasq.mixed_precision.bit_allocation import BitAllocator
from kerasq.mixed_precision.solver import evaluate
from kerasq.pipeline import allocation_inputs, finish, prepare
from kerasq.platform import TargetPlatformCapabilities
from kerasq.progress import progress


@dataclass
class BudgetProbe:
    budget: float
    metric: float
    meets_target: bool


@dataclass
class BudgetSearchResult:
    """The chosen model and how the search got there."""

    model: keras.Model
    info: QuantizationInfo
    resource: str
    budget: float  # the smallest probed budget that met the target
    meets_target: bool  # False when even the highest widths miss it (the model returned is that one)
    float_metric: float | None
    evaluations: int  # calls of evaluate_fn (or output-distance evaluations), the float model's included
    probes: list[BudgetProbe] = field(default_factory=list)
    held_out_samples: int = 0  # samples the output distance was measured on (target_output_distance)


def _relative_l2(model: keras.Model, reference: list[np.ndarray], samples: list[np.ndarray]) -> float:
    outputs = keras.tree.flatten(model.predict(samples, batch_size=64, verbose=0))
    flat = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in outputs], axis=1)
    ref = np.concatenate([r.reshape(len(r), -1) for r in reference], axis=1)
    return float(np.mean(np.linalg.norm(flat - ref, axis=1) / (np.linalg.norm(ref, axis=1) + 1e-12)))


def _is_finite_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_search_arguments(
    evaluate_fn: object, max_accuracy_drop: object, target_output_distance: object, held_out_data: object,
    resource: object, relative_tolerance: object,
) -> None:  # fmt: skip
    if not isinstance(resource, str) or resource not in RESOURCES:
        raise ConfigError(f"resource must be one of {RESOURCES}, got {resource!r}.")
    if (max_accuracy_drop is None) == (target_output_distance is None):
        raise ConfigError(
            "Give exactly one target: max_accuracy_drop (with evaluate_fn) or target_output_distance."
        )
    if max_accuracy_drop is not None:
        if not _is_finite_number(max_accuracy_drop) or max_accuracy_drop < 0:
            raise ConfigError(
                "max_accuracy_drop must be a finite number >= 0, in the units evaluate_fn returns (e.g. 1.0 for "
                f"one point of top-1 %), got {max_accuracy_drop!r}."
            )
        if evaluate_fn is None or not callable(evaluate_fn):
            raise ConfigError("max_accuracy_drop needs evaluate_fn(model) -> float (higher is better).")
    if held_out_data is not None and target_output_distance is None:
        raise ConfigError(
            "held_out_data is where target_output_distance is measured; with max_accuracy_drop, evaluate_fn "
            "chooses its own data. Remove held_out_data or give target_output_distance."
        )
    if target_output_distance is not None and (
        not _is_finite_number(target_output_distance) or target_output_distance <= 0
    ):
        raise ConfigError(
            "target_output_distance must be a finite number > 0 (a relative L2 distance such as 0.05), "
            f"got {target_output_distance!r}."
        )
    if not _is_finite_number(relative_tolerance) or not 0 < relative_tolerance < 1:
        raise ConfigError(
            f"relative_tolerance must be a number in (0, 1) such as 0.02, got {relative_tolerance!r}."
        )


HELD_OUT_FRACTION = 0.2  # of the representative data, kept from calibration to measure the output distance
HELD_OUT_MAX = 256


def _split_held_out(
    model: keras.Model, data: Any, held_out: Any, core_config: CoreConfig
) -> tuple[Any, list[np.ndarray]]:
    """(calibration data, held-out samples): ``held_out`` as given, else the last fifth of ``data`` (at most
    256 samples), which calibration then does without."""
    specs = input_specs_from_model(model)
    if held_out is not None:
        validation = RepresentativeData(held_out, specs)
        return data, validation.take(validation.num_samples())
    source = RepresentativeData(data, specs, max_batches=core_config.n_iter)
    n = source.num_samples()
    if n < 2:
        raise DataError(
            f"target_output_distance is measured on representative samples held out from calibration, but the "
            f"data has {n}; pass more samples or held_out_data=... (samples to measure the distance on)."
        )
    arrays = source.take(n)
    k = min(HELD_OUT_MAX, max(1, round(n * HELD_OUT_FRACTION)))
    return [a[: n - k] for a in arrays], [a[n - k :] for a in arrays]


def _calibration_split(
    model: keras.Model,
    data: Any,
    held_out_data: Any,
    target_output_distance: float | None,
    core_config: CoreConfig,
) -> tuple[Any, list[np.ndarray], CoreConfig]:
    """(calibration data, held-out samples, core config) of the search. With an output-distance target the
    samples to measure it on are split off (``_split_held_out``); when they come out of the representative
    data, its ``n_iter`` was applied when reading it, so the config ``prepare`` gets no longer has it."""
    if target_output_distance is None:
        return data, [], core_config
    data, held_out = _split_held_out(model, data, held_out_data, core_config)
    if held_out_data is None and isinstance(core_config, CoreConfig):  # n_iter was applied when reading
        core_config = replace(core_config, n_iter=None)
    return data, held_out, core_config


def _quality_test(
    model: keras.Model,
    evaluate_fn: Callable[[keras.Model], float] | None,
    max_accuracy_drop: float | None,
    target_output_distance: float | None,
    held_out: list[np.ndarray],
) -> tuple[float | None, Callable[[keras.Model], tuple[float, bool]]]:
    """(the float model's metric, or None for an output-distance target; a quantized model's (metric,
    whether it meets the target)): with ``max_accuracy_drop``, ``evaluate_fn`` within the drop of the float
    model's value (evaluated here, once); else the relative L2 distance to the float outputs on
    ``held_out`` at most ``target_output_distance``."""
    if max_accuracy_drop is not None:
        assert evaluate_fn is not None, "_check_search_arguments requires evaluate_fn with max_accuracy_drop"
        float_metric = float(evaluate_fn(model))

        def quality(m: keras.Model) -> tuple[float, bool]:
            value = float(evaluate_fn(m))
            return value, float_metric - value <= max_accuracy_drop

        return float_metric, quality
    assert target_output_distance is not None, "_check_search_arguments requires one of the two targets"
    reference = [np.asarray(o, np.float64) for o in keras.tree.flatten(model.predict(held_out, verbose=0))]

    def distance(m: keras.Model) -> tuple[float, bool]:
        value = _relative_l2(m, reference, held_out)
        return value, value <= target_output_distance

    return None, distance


def _bisect(probe: Callable[[float], bool], lo: float, hi: float, relative_tolerance: float) -> None:
    """Bisect the budget between ``lo`` (misses the target) and ``hi`` (meets it) with ``probe`` until the
    bracket is ``relative_tolerance`` of ``hi - lo`` wide (at most ``log2(1 / relative_tolerance)`` probes)."""
    steps = max(1, math.ceil(math.log2(1 / relative_tolerance)))
    low, high = lo, hi
    for _ in progress(range(steps), "kerasq: budget search", steps, "probe"):
        if high - low <= relative_tolerance * (hi - lo):
            break
        mid = (low + high) / 2
        if probe(mid):
            high = mid
        else:
            low = mid


def keras_accuracy_target_search(
    model: keras.Model,
    representative_data_gen: Any,
    evaluate_fn: Callable[[keras.Model], float] | None = None,
    *,
    max_accuracy_drop: float | None = None,
    target_output_distance: float | None = None,
    held_out_data: Any = None,
    resource: str = "weights_memory",
    relative_tolerance: float = 0.02,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> BudgetSearchResult:
    """Find the smallest ``resource`` budget whose mixed-precision model meets the target.

    Give either ``evaluate_fn`` and ``max_accuracy_drop`` (the float model is evaluated once for the
    baseline), or ``target_output_distance``, measured on ``held_out_data`` (any form the representative
    data takes) or, without it, on the last fifth of the representative data (at most 256 samples), which
    calibration then does without. ``relative_tolerance`` is the bisection's stopping width as a fraction of
    the budget range.
    """
    _check_search_arguments(
        evaluate_fn, max_accuracy_drop, target_output_distance, held_out_data, resource, relative_tolerance
    )
    core_config = core_config if core_config is not None else CoreConfig()
    representative_data_gen, held_out, core_config = _calibration_split(
        model, representative_data_gen, held_out_data, target_output_distance, core_config
    )
    prepared = prepare(model, representative_data_gen, core_config, target_platform_capabilities)
    allocator = BitAllocator.create(allocation_inputs(prepared), [resource])
    float_metric, quality = _quality_test(
        model, evaluate_fn, max_accuracy_drop, target_output_distance, held_out
    )

    evaluated: dict[tuple[int, ...], tuple[Any, float, bool]] = {}
    probes: list[tuple[BudgetProbe, Any]] = []

    def probe(budget: float) -> bool:
        target = ResourceUtilization(**{resource: budget})
        choice = tuple(int(c) for c in allocator.solve(target))
        if choice not in evaluated:
            quantized, info = finish(
                prepared, allocator.plan_for(choice), allocator.report(np.array(choice), target)
            )
            evaluated[choice] = ((quantized, info), *quality(quantized))
        result, metric, met = evaluated[choice]
        probes.append((BudgetProbe(budget=budget, metric=metric, meets_target=met), result))
        return met

    lo = allocator.reachable(resource)
    hi = evaluate(allocator.problem, np.zeros(len(allocator.units), int))[resource]
    if probe(hi) and lo < hi and not probe(lo):
        _bisect(probe, lo, hi, relative_tolerance)
    met = [(p, r) for p, r in probes if p.meets_target]
    best, (quantized, info) = min(met, key=lambda pr: pr[0].budget) if met else probes[0]
    return BudgetSearchResult(
        model=quantized, info=info, resource=resource, budget=best.budget, meets_target=best.meets_target,
        float_metric=float_metric, evaluations=len(evaluated) + (float_metric is not None),
        probes=[p for p, _ in probes], held_out_samples=len(held_out[0]) if held_out else 0,
    )  # fmt: skip
