"""Shift-negative correction in the pipeline: choose the shifts from statistics, rewrite, re-plan, re-observe.

An activation with a negative tail (swish's minimum is about -0.28) wastes half of a signed grid on a sliver
of values. Shifting it up by ``s`` makes it non-negative, so it is quantized unsigned (one more bit of
resolution); the next linear layer subtracts ``s * sum(W)`` in its bias, so the float model is unchanged (the
rewrite itself is ``kerasq.graph.rewrites.shift_negative``). The shifted tensor gets a fixed unsigned grid
(the threshold from before the shift, or searched again on the shifted values), and the shift is a multiple of
its step so that zero, and the padding the next layer sees, stay exact.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.config.config import QuantizationConfig
from kerasq.graph.model_graph import Graph
from kerasq.graph.rewrites.shift_negative import shift_negative, snc_candidates
from kerasq.layers import ShiftedActivation
from kerasq.params.grid_cache import activation_params
from kerasq.params.search import fixed_activation_params
from kerasq.plan import ActivationSpec, FixedGrid, QuantizationPlan, SearchedGrid
from kerasq.platform.capabilities import TargetPlatformCapabilities
from kerasq.statistics.histogram import TensorStats

_SEARCH_FRACTIONS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def _threshold(spec: ActivationSpec, stats: TensorStats, qc: QuantizationConfig) -> float:
    params = activation_params(spec, stats, qc)
    top = params.threshold if params.threshold is not None else params.range_max
    return float(np.max(top))


def _shifted(stats: TensorStats, shift: float) -> tuple[np.ndarray, np.ndarray, TensorStats]:
    """(values, counts) of the histogram moved up by ``shift``, and the same as statistics."""
    centres = stats.bin_centers()
    occupied = stats.counts > 0
    values, counts = np.clip(centres[occupied], stats.min, stats.max) + shift, stats.counts[occupied]
    hi = float(values.max())
    bound = 2.0 ** np.ceil(np.log2(max(hi, 1e-12)))
    shifted_counts, _ = np.histogram(values, bins=stats.counts.size, range=(-bound, bound), weights=counts)
    return (
        values,
        counts,
        TensorStats(
            counts=shifted_counts,
            hist_range=bound,
            min=max(float(values.min()), 0.0),
            max=hi,
            num_values=stats.num_values,
        ),
    )


def _option(
    spec: ActivationSpec, stats: TensorStats, shift: float, threshold: float | None, qc: QuantizationConfig
) -> tuple[float, float, float]:
    """(error, shift on the grid, threshold) for shifting by about ``shift`` with an unsigned grid whose
    threshold is ``threshold`` (None: searched on the shifted values)."""
    unsigned = replace(spec, signedness="unsigned")
    if threshold is None:
        threshold = _threshold(unsigned, _shifted(stats, shift)[2], qc)
    params = fixed_activation_params(0.0, threshold, n_bits=spec.n_bits, method=spec.method)
    step = float(np.max(params.scale))
    on_grid = float(np.ceil(shift / step - 1e-9) * step)  # 0 (and the padding) must stay exact: s on the grid
    values, counts, _ = _shifted(stats, on_grid)
    error = float(counts @ (params.fake_quant(values) - values) ** 2 / counts.sum())
    return (
        error,
        on_grid,
        float(np.max(params.threshold if params.threshold is not None else params.range_max)),
    )


def choose_shifts(
    graph: Graph, plan: QuantizationPlan, stats: dict[int, TensorStats], qc: QuantizationConfig
) -> dict[str, tuple[float, float]]:
    """Activation node -> (shift, unsigned threshold), for every candidate with a small negative tail:
    ``0 < |min| / T <= ratio`` (``T`` the threshold chosen before the shift; a large negative part is better
    served by the signed grid). The shift is a multiple of the grid step, so zero maps exactly."""
    shifts = {}
    for name in snc_candidates(graph):
        tensor = graph.node(name).outputs[0]
        spec = plan.activations.get(tensor)
        if spec is None or not isinstance(spec.grid, SearchedGrid) or tensor not in stats:
            continue
        st = stats[tensor]
        negative = -min(st.min, 0.0)
        before = _threshold(spec, st, qc)
        if negative <= 0 or negative / before > qc.shift_negative_ratio:
            continue
        fractions = _SEARCH_FRACTIONS if qc.shift_negative_params_search else (1.0,)
        threshold = None if qc.shift_negative_threshold_recalculation else before
        options = [_option(spec, st, f * negative, threshold, qc) for f in fractions]
        _, shift, top = min(options)
        shifts[name] = (shift, top)
    return shifts


def apply_shift_negative(
    graph: Graph,
    plan: QuantizationPlan,
    stats: dict[int, TensorStats],
    qc: QuantizationConfig,
    tpc: TargetPlatformCapabilities,
) -> tuple[Graph, QuantizationPlan, list[str]]:
    """The rewritten graph and its plan (shifted tensors on fixed unsigned grids), plus warnings."""
    if not qc.shift_negative_activation_correction:
        return graph, plan, []
    if not tpc.shifted_activations:
        if not snc_candidates(graph):  # nothing it would shift: the default setting stays silent
            return graph, plan, []
        note = (f"shift_negative_activation_correction skipped: platform {tpc.name!r} cannot apply an activation and "
                "a shift in one kernel (its activations are requantized separately)")  # fmt: skip
        return graph, plan, [note]
    shifts = choose_shifts(graph, plan, stats, qc)
    if not shifts:
        return graph, plan, []
    new_graph = shift_negative(graph, {name: shift for name, (shift, _) in shifts.items()})
    new_plan = replace(plan, activations=dict(plan.activations))
    for name, (_, threshold) in shifts.items():
        tensor = graph.node(name).outputs[0]
        spec = plan.activations[tensor]
        new_plan.activations[tensor] = replace(
            spec,
            signedness="unsigned",
            grid=FixedGrid(lo=0.0, hi=threshold, imposed_by="shift_negative_correction"),
        )
    return new_graph, new_plan, []


def shifted_input_means(graph: Graph, means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mean inputs of ``graph``'s nodes (after ``shift_negative``) from ``means``, those before the shift.

    A reader of a ``ShiftedActivation`` sees ``pad(a) + s`` where it saw ``a``: its mean input is the mean of
    ``a`` (one value per position and channel), zero padded the same way, plus ``s``. Every other mean is
    unchanged."""
    producers = graph.producers()
    shifted = dict(means)
    for node in graph.nodes:
        source = producers.get(node.inputs[0]) if node.name in means and node.inputs else None
        if source is None or not isinstance(source.op, ShiftedActivation):
            continue
        mean = means[node.name]
        if source.op.padding is not None:
            mean = np.pad(mean, [*source.op.padding, (0, 0)])
        shifted[node.name] = mean + source.op.shift
    return shifted
