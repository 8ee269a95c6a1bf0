"""Bias correction: remove the mean output shift that weight quantization causes.

Quantizing a kernel ``W`` to ``W_q`` changes a linear layer's output by ``layer(x; W_q - W)``. Its mean over the
representative data is ``layer(mean_x; W_q - W)`` (the layer is linear in ``x``), with ``mean_x`` the input
averaged over samples but kept per position, so padded borders, strides and groups are exact. The corrected
bias is ``b`` minus that shift averaged over output positions (a bias is one value per channel).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import keras
import numpy as np

from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.weights import declared_weight_names, named_weights, weight_names
from kerasq.plan import QuantizationParams
from kerasq.quantizers.grid import QuantParams
from kerasq.quantizers.kernel_ops import LINEAR_OPS
from kerasq.quantizers.weighted_kinds import kinds_with

CORRECTED_KINDS = kinds_with("bias_correction")


def bias_shift(node: Node, error: np.ndarray, mean_input: np.ndarray) -> np.ndarray:
    """Mean output shift per output channel of ``node`` when its kernel changes by ``error``: the layer's
    linear op on the error kernel (its config gives strides, padding, ...), without building a layer."""
    config = SimpleNamespace(**node.layer_config)
    x = np.asarray(mean_input, np.float32)[None]
    y = LINEAR_OPS[node.known_kind](config, x, {"kernel": np.asarray(error, np.float32)})
    y = keras.ops.convert_to_numpy(y).astype(np.float64)
    return y.reshape(-1, y.shape[-1]).mean(axis=0)


def _corrected(
    node: Node, kernel_params: QuantParams, mean_input: np.ndarray, quantized: np.ndarray | None = None
) -> Node:
    weights = named_weights(node)
    kernel = weights["kernel"]
    if quantized is None:
        quantized = kernel_params.fake_quant(kernel.astype(np.float64))
    shift = bias_shift(node, quantized - kernel, mean_input)
    bias = weights.get("bias", np.zeros(shift.shape, np.float32)).astype(np.float64)
    weights["bias"] = (bias - shift).astype(np.float32)
    config = {**node.layer_config, "use_bias": True}
    return replace(
        node, config=config, weights=[weights[n] for n in weight_names(node.known_kind, use_bias=True)]
    )


def correct_biases(
    graph: Graph,
    params: QuantizationParams,
    input_means: dict[str, np.ndarray],
    quantized_kernels: dict[str, np.ndarray] | None = None,
) -> Graph:
    """A copy of ``graph`` whose quantized conv / depthwise / dense nodes have corrected biases.

    ``input_means``: node name -> the node's input averaged over samples (nodes without one are left alone).
    ``quantized_kernels``: node name -> the kernel the quantized model will hold where it is not the nearest
    rounding of the float one (error-compensated rounding); the shift is that kernel's error.
    """
    quantized_kernels = quantized_kernels or {}
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
            node = _corrected(
                node, kernels["kernel"], input_means[node.name], quantized_kernels.get(node.name)
            )
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


def with_kernels(graph: Graph, kernels: dict[str, np.ndarray]) -> Graph:
    """A copy of ``graph`` whose named nodes hold the given kernels (biases and other weights kept)."""
    nodes = []
    for node in graph.nodes:
        if node.name in kernels:
            weights = named_weights(node)
            weights["kernel"] = kernels[node.name]
            node = replace(node, weights=[weights[n] for n in declared_weight_names(node)])
        nodes.append(node)
    return graph.with_nodes(nodes)
