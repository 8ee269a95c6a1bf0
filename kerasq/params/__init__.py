"""Choosing quantization grids: error measures and vectorized threshold / range search."""

from kerasq.params.quant_params import QuantParams, integer_range
from kerasq.params.search import fixed_activation_params, search_activation_params, search_weight_params

__all__ = [
    "QuantParams",
    "fixed_activation_params",
    "integer_range",
    "search_activation_params",
    "search_weight_params",
]
