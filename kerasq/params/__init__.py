"""Choosing quantization grids: error measures and vectorized threshold / range search."""

from kerasq.params.search import fixed_activation_params, search_activation_params, search_weight_params

__all__ = ["fixed_activation_params", "search_activation_params", "search_weight_params"]
