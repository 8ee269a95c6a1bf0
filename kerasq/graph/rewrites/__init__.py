"""Graph -> Graph rewrites applied before statistics are collected (each keeps the float function).

``REWRITES`` is the order the pipeline applies them in; a rewrite with ``enabled_by`` runs only when that
``QuantizationConfig`` field is true. Shift-negative correction (``shift_negative.py``) is not in the list: it
needs the activation statistics and runs later, from ``kerasq.corrections``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kerasq.config.config import QuantizationConfig
from kerasq.graph.model_graph import Graph
from kerasq.graph.rewrites.activation_split import split_activations
from kerasq.graph.rewrites.affine_depthwise import lower_affines
from kerasq.graph.rewrites.bn_fold import fold_batch_norms
from kerasq.graph.rewrites.layer_norm_split import split_layer_norms
from kerasq.graph.rewrites.linear_collapse import collapse_linear
from kerasq.graph.rewrites.relu_bound import bound_relu_to_power_of_2
from kerasq.graph.rewrites.residual_collapse import collapse_residual
from kerasq.graph.rewrites.separable_split import split_separable_convs


@dataclass(frozen=True)
class Rewrite:
    """One float-equivalent rewrite: its name, the function, and the config field that enables it."""

    name: str
    apply: Callable[[Graph], Graph]
    enabled_by: str | None = None  # a boolean QuantizationConfig field; None = always applied


REWRITES: tuple[Rewrite, ...] = (
    Rewrite(name="split layer norms", apply=split_layer_norms),
    Rewrite(name="fold batch norms", apply=fold_batch_norms),
    Rewrite(name="lower standalone affines to depthwise convs", apply=lower_affines),
    Rewrite(name="split separable convs", apply=split_separable_convs),
    Rewrite(name="split activations", apply=split_activations),
    Rewrite(name="collapse linear chains", apply=collapse_linear, enabled_by="linear_collapsing"),
    Rewrite(name="collapse residual adds", apply=collapse_residual, enabled_by="residual_collapsing"),
    Rewrite(
        name="bound ReLUs to a power of 2",
        apply=bound_relu_to_power_of_2,
        enabled_by="relu_bound_to_power_of_2",
    ),
)


def rewrite_graph(graph: Graph, qc: QuantizationConfig) -> Graph:
    """``graph`` through every rewrite of ``REWRITES`` that ``qc`` enables, in order."""
    for rewrite in REWRITES:
        if rewrite.enabled_by is None or getattr(qc, rewrite.enabled_by):
            graph = rewrite.apply(graph)
    return graph


__all__ = [
    "REWRITES",
    "Rewrite",
    "bound_relu_to_power_of_2",
    "collapse_linear",
    "collapse_residual",
    "fold_batch_norms",
    "lower_affines",
    "rewrite_graph",
    "split_activations",
    "split_layer_norms",
    "split_separable_convs",
]
