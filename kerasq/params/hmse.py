"""Per-weight importance for ``QuantizationErrorMethod.HMSE``: label-free Hessian scores of the float model."""

from __future__ import annotations

import numpy as np

from kerasq.builder.model_builder import build_model
from kerasq.graph.model_graph import Graph
from kerasq.mixed_precision.hessian import weight_hessian_scores
from kerasq.platform.assign import QuantizationPlan


def kernel_importance(
    graph: Graph, plan: QuantizationPlan, samples: list[np.ndarray]
) -> dict[tuple[str, str], np.ndarray]:
    """(node, kernel) -> per-element score ``E ||d(v.y)/dw||^2`` of the (folded) float model's output."""
    built = build_model(graph)
    keys = [(node, kernel) for node, kernels in plan.weights.items() for kernel in kernels]
    if not keys:
        return {}
    variables = [getattr(built.layers[node], kernel) for node, kernel in keys]
    scores = weight_hessian_scores(built.model, variables, [samples], granularity="element")
    # a weight no output depends on would get zero importance everywhere; keep a floor so the search is defined
    return {key: np.maximum(s, 1e-12 * (s.max() + 1e-30)) for key, s in zip(keys, scores, strict=True)}
