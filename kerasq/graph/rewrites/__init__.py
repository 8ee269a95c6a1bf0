"""Graph -> Graph rewrites applied before statistics are collected (each keeps the float function)."""

from kerasq.graph.rewrites.activation_split import split_activations
from kerasq.graph.rewrites.affine_depthwise import lower_affines
from kerasq.graph.rewrites.bn_fold import fold_batch_norms
from kerasq.graph.rewrites.layer_norm_split import split_layer_norms
from kerasq.graph.rewrites.linear_collapse import collapse_linear
from kerasq.graph.rewrites.relu_bound import bound_relu_to_power_of_2
from kerasq.graph.rewrites.residual_collapse import collapse_residual
from kerasq.graph.rewrites.separable_split import split_separable_convs

__all__ = [
    "bound_relu_to_power_of_2",
    "collapse_linear",
    "collapse_residual",
    "fold_batch_norms",
    "lower_affines",
    "split_activations",
    "split_layer_norms",
    "split_separable_convs",
]
