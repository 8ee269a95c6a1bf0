"""Bias correction: remove the mean output shift that weight quantization causes.

With input channel means ``mu`` (float model, representative data), quantizing a kernel ``W`` to ``W_q`` shifts
the expected output by ``delta = sum (W_q - W) * mu`` over the kernel's input axes (spatial taps and input
channels; depthwise kernels per channel; grouped convolutions per group). The corrected layer's bias is
``b - delta``, so the quantized layer's mean output equals the float one on the representative data (border
positions of padded convolutions see fewer taps: the correction is exact in the interior).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.weights import named_weights, weight_names
from kerasq.params.quant_params import QuantParams
from kerasq.params.selection import QuantizationParams

CORRECTED_KINDS = ("conv", "dense", "depthwise_conv")


def bias_shift(kind: str, error: np.ndarray, input_mean: np.ndarray, groups: int = 1) -> np.ndarray:
    """Mean output shift per output channel of a kernel error ``W_q - W`` for inputs of mean ``input_mean``."""
    error = np.asarray(error, np.float64)
    mu = np.asarray(input_mean, np.float64)
    if kind == "dense":
        return mu @ error
    spatial = tuple(range(error.ndim - 2))
    summed = error.sum(axis=spatial)  # [in (per group), out] or, depthwise, [channels, multiplier]
    if kind == "depthwise_conv":
        return (summed * mu[:, None]).reshape(-1)
    per_group_in, out = summed.shape
    group_of_output = np.arange(out) // (out // groups)
    mu_groups = mu.reshape(groups, per_group_in)[group_of_output]  # [out, in per group]
    return np.einsum("io,oi->o", summed, mu_groups)


def _corrected(node: Node, kernel_params: QuantParams, input_mean: np.ndarray) -> Node:
    weights = named_weights(node)
    kernel = weights["kernel"]
    error = kernel_params.fake_quant(kernel.astype(np.float64)) - kernel
    shift = bias_shift(node.kind, error, input_mean, int(node.layer_config.get("groups", 1) or 1))
    bias = weights.get("bias", np.zeros(shift.shape, np.float32)).astype(np.float64)
    weights["bias"] = (bias - shift).astype(np.float32)
    config = {**node.layer_config, "use_bias": True}
    return replace(node, config=config, weights=[weights[n] for n in weight_names(node.kind, use_bias=True)])


def correct_biases(graph: Graph, params: QuantizationParams, input_means: dict[str, np.ndarray]) -> Graph:
    """A copy of ``graph`` whose quantized conv / depthwise / dense nodes have corrected biases.

    ``input_means``: node name -> per-channel mean of the node's input (nodes without one are left alone).
    """
    nodes = []
    for node in graph.nodes:
        kernels = params.weights.get(node.name, {})
        channels_last = (
            node.kind is not None and node.layer_config.get("data_format", "channels_last") == "channels_last"
        )
        if (
            node.kind in CORRECTED_KINDS
            and "kernel" in kernels
            and node.name in input_means
            and channels_last
        ):
            node = _corrected(node, kernels["kernel"], input_means[node.name])
        nodes.append(node)
    return graph.with_nodes(nodes)


def add_zero_biases(graph: Graph, names: set[str]) -> Graph:
    """Give the named conv / depthwise / dense nodes a zero bias where they have none (float-identical), so
    resource figures count the bias that correction will fill in."""
    nodes = []
    for node in graph.nodes:
        if (
            node.name in names
            and node.kind in CORRECTED_KINDS
            and not node.layer_config.get("use_bias", False)
        ):
            weights = named_weights(node)
            kernel = weights["kernel"]
            out = kernel.shape[-2] * kernel.shape[-1] if node.kind == "depthwise_conv" else kernel.shape[-1]
            weights["bias"] = np.zeros(out, np.float32)
            config = {**node.layer_config, "use_bias": True}
            node = replace(
                node, config=config, weights=[weights[n] for n in weight_names(node.kind, use_bias=True)]
            )
        nodes.append(node)
    return graph.with_nodes(nodes)
