"""Graph -> Graph rewrites applied before statistics are collected."""

from kerasq.graph.rewrites.bn_fold import fold_batch_norms

__all__ = ["fold_batch_norms"]
