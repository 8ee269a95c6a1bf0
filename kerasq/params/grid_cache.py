"""Choose every grid of a plan: one threshold/range search per activation tensor and per kernel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.config.config import QuantizationConfig
from kerasq.errors import ModelError
from kerasq.graph.model_graph import Graph
from kerasq.graph.weights import named_weights
from kerasq.params.fused_search import fused_tensor_params
from kerasq.params.search import fixed_activation_params, search_activation_params, search_weight_params
from kerasq.plan import ActivationSpec, FixedGrid, QuantizationParams, QuantizationPlan, WeightSpec
from kerasq.progress import progress
from kerasq.quantizers.grid import QuantParams
from kerasq.statistics.histogram import TensorStats
from kerasq.statistics.outliers import remove_outliers

_SIGNED = {"auto": None, "signed": True, "unsigned": False}


def activation_params(
    spec: ActivationSpec, stats: TensorStats | None, qc: QuantizationConfig, n_bits: int | None = None
) -> QuantParams:
    """Grid for one activation tensor: the platform's fixed range, or a search on its histogram."""
    if isinstance(spec.grid, FixedGrid):
        return fixed_activation_params(
            spec.grid.lo, spec.grid.hi, n_bits=n_bits or spec.n_bits, method=spec.method
        )
    if stats is None:
        raise ModelError(
            f"Activation of {spec.producer!r}: it has no statistics and no fixed range, so no grid can be searched."
        )
    return search_activation_params(
        stats.counts, stats.hist_range, observed_min=stats.min, observed_max=stats.max,
        n_bits=n_bits or spec.n_bits, method=spec.method, error_method=qc.activation_error_method,
        signed=_SIGNED[spec.signedness], l_p_value=qc.l_p_value,
    )  # fmt: skip


def weight_params(
    spec: WeightSpec,
    graph: Graph,
    qc: QuantizationConfig,
    n_bits: int | None = None,
    importance: np.ndarray | None = None,
):
    """Grid for one kernel of one node (``importance``: per-weight Hessian scores, used by HMSE)."""
    kernel = named_weights(graph.node(spec.node))[spec.kernel]
    return search_weight_params(
        kernel, n_bits=n_bits or spec.n_bits, method=spec.method, error_method=qc.weights_error_method,
        channel_axis=spec.axes or None, l_p_value=qc.l_p_value, narrow_range=spec.narrow_range,
        importance=importance,
    )  # fmt: skip


class GridCache:
    """Grids searched once per (tensor or kernel, bit width): mixed precision asks for many widths."""

    def __init__(
        self,
        graph: Graph,
        stats: dict[int, TensorStats],
        qc: QuantizationConfig,
        importance: dict[tuple[str, str], np.ndarray] | None = None,
    ) -> None:
        self.graph, self.stats, self.qc = graph, stats, qc
        self.importance = importance or {}
        self._activations: dict[tuple[int, int], QuantParams] = {}
        self._weights: dict[tuple[str, str, int], QuantParams] = {}
        self._consumers = graph.consumers()

    def activation(self, spec: ActivationSpec, n_bits: int) -> QuantParams:
        key = (spec.tensor, n_bits)
        if key not in self._activations:
            stats = self.stats.get(spec.tensor)
            if stats is not None and self.qc.z_threshold is not None:
                stats = remove_outliers(stats, self.qc.z_threshold)
            self._activations[key] = activation_params(spec, stats, self.qc, n_bits)
        return self._activations[key]

    def fused(self, tensor: int) -> QuantParams:
        """The 8-bit grid a runtime that stores fused ``tensor`` should use (``fused_tensor_params``)."""
        key = (tensor, -8)
        if key not in self._activations:
            readers = self._consumers.get(tensor, [])
            consumer = readers[0].kind if len(readers) == 1 else None
            self._activations[key] = fused_tensor_params(self.stats[tensor], consumer)
        return self._activations[key]

    def weight(self, spec: WeightSpec, n_bits: int) -> QuantParams:
        key = (spec.node, spec.kernel, n_bits)
        if key not in self._weights:
            importance = self.importance.get((spec.node, spec.kernel))
            self._weights[key] = weight_params(spec, self.graph, self.qc, n_bits, importance)
        return self._weights[key]

    def params_for(self, plan: QuantizationPlan) -> QuantizationParams:
        """Every grid of ``plan`` at its bit widths."""
        own = {tid: spec for tid, spec in plan.activations.items() if spec.shared_owner is None}
        activations = {
            tid: self.activation(spec, spec.n_bits)
            for tid, spec in progress(own.items(), "kerasq: activation grids", len(own), "tensor")
        }
        for tid, spec in plan.activations.items():
            if spec.shared_owner is not None:
                shared = activations[spec.shared_owner]
                activations[tid] = (
                    shared if spec.rounding == shared.rounding else replace(shared, rounding=spec.rounding)
                )
        weights = {
            node: {name: self.weight(spec, spec.n_bits) for name, spec in kernels.items()}
            for node, kernels in progress(
                plan.weights.items(), "kerasq: weight grids", len(plan.weights), "layer"
            )
        }
        fused = {tid: self.fused(tid) for tid in sorted(plan.fused) if tid in self.stats}
        return QuantizationParams(activations=activations, weights=weights, fused=fused)
