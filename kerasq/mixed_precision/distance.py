"""Distance to float at the interest points, as the mixed-precision sensitivity measures it: which tensors
are interest points (every quantized activation and every model output), which of them each tensor reaches,
how they are weighted (``MpDistanceWeighting``), and the normalized MSE ``mean_n ||q_n - f_n||^2 / ||f_n||^2``
of a candidate-stacked batch against the float one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kerasq.config.enums import MpDistanceWeighting
from kerasq.graph.model_graph import Graph
from kerasq.plan import QuantizationPlan

_EPS = 1e-12


def _reachable_points(graph: Graph, points: Sequence[int]) -> dict[int, int]:
    """Tensor -> bitmask of the interest points (indices into ``points``) it reaches, itself included."""
    bit = {t: 1 << i for i, t in enumerate(points)}
    consumers = graph.consumers()
    below: dict[str, int] = {}  # node -> the points its outputs reach

    def reach_of(t: int) -> int:
        mask = bit.get(t, 0)
        for node in consumers.get(t, []):
            mask |= below[node.name]
        return mask

    reach: dict[int, int] = {}
    for node in reversed(graph.nodes):  # consumers before producers
        below[node.name] = 0
        for t in node.outputs:
            reach[t] = reach_of(t)
            below[node.name] |= reach[t]
    for t in graph.inputs:
        reach[t] = reach_of(t)
    return reach


def interest_points(graph: Graph, plan: QuantizationPlan) -> list[tuple[int, str]]:
    """(tensor, label) of every quantized node output and every model output, in graph order."""
    outputs = set(graph.output_ids())
    points = []
    for node in graph.nodes:
        for tid in node.outputs:
            if tid in plan.activations or tid in outputs:
                points.append((tid, node.name))
    return points


def _energy(f: np.ndarray) -> np.ndarray:
    """``||f_n||^2`` per sample of the float batch ``f`` (shape (1, samples))."""
    return np.sum(f.reshape(1, f.shape[0], -1) ** 2, axis=2)


def _nmse(q: Any, f: np.ndarray, variants: int, energy: np.ndarray | None = None) -> np.ndarray:
    """Normalized MSE per variant: ``q`` holds ``variants`` stacked copies of the batch ``f`` (``energy``:
    ``_energy(f)``, computed once per point). In place on one float64 copy of ``q``."""
    d = np.array(q, np.float64).reshape(variants, f.shape[0], -1)
    d -= f.reshape(1, f.shape[0], -1)
    d *= d
    energy = _energy(f) if energy is None else energy
    return (np.sum(d, axis=2) / (energy + _EPS)).mean(axis=1)


def point_weights(
    method: MpDistanceWeighting,
    labels: list[str],
    is_output: np.ndarray,
    sigma: float,
    hessian: np.ndarray | None = None,
) -> np.ndarray:
    n = len(labels)
    if method is MpDistanceWeighting.LAST_LAYER:
        w = is_output.astype(np.float64)
    elif method is MpDistanceWeighting.EXP:
        depth = np.arange(n) / max(n - 1, 1)
        w = np.exp(-(1.0 - depth) / sigma)
    elif method is MpDistanceWeighting.HESSIAN:
        w = np.asarray(hessian, np.float64)
    else:
        w = np.ones(n)
    return w / max(w.sum(), _EPS)
