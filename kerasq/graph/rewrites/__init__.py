"""Graph -> Graph rewrites applied before statistics are collected."""

from kerasq.graph.rewrites.activation_split import split_activations
from kerasq.graph.rewrites.bn_fold import fold_batch_norms
from kerasq.graph.rewrites.separable_split import split_separable_convs

__all__ = ["fold_batch_norms", "split_activations", "split_separable_convs"]
