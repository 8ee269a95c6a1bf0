"""Fold BatchNormalization into the preceding conv / dense layer.

y = gamma * (W x + b - mean) / sqrt(var + eps) + beta  ==  (W * f) x + (b - mean) * f + beta,
with f = gamma / sqrt(var + eps) applied per output channel. The folded node gets its own weights and a
config with ``use_bias=True``; the BatchNormalization node disappears. The user's layers are untouched.
A BatchNormalization with no such layer before it becomes a 1x1 depthwise convolution (``affine_depthwise``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeGuard

import numpy as np

from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import activation_kind, is_weighted
from kerasq.graph.rewrites.affine_depthwise import bn_scale_shift
from kerasq.graph.weights import OUTPUT_KERNEL, QUANTIZED_KERNELS, channel_axes, named_weights, weight_names


def _can_fold(src: Node | None, bn: Node, graph: Graph, consumers: dict, shared: set[int]) -> TypeGuard[Node]:
    if src is None or not is_weighted(src.kind) or src.float_reason or id(src.op) in shared:
        return False
    config = src.layer_config
    if activation_kind(src.activation()) not in (None, "identity"):
        return False
    if config.get("data_format", "channels_last") != "channels_last":
        return False
    out_id = src.outputs[0]
    if len(src.outputs) != 1 or len(consumers.get(out_id, [])) != 1 or out_id in graph.output_ids():
        return False
    rank = len(graph.tensors[out_id].shape)
    axis = bn.op.axis if isinstance(bn.op.axis, int) else None
    return axis is not None and axis % rank == rank - 1


def fold_into(src: Node, bn: Node) -> Node:
    """A copy of ``src`` whose weights include ``bn``'s affine transform."""
    scale, shift = bn_scale_shift(bn)
    weights = named_weights(src)
    kernel_name = OUTPUT_KERNEL[src.known_kind]
    kernel = weights[kernel_name].astype(np.float64)
    axes = channel_axes(kernel, QUANTIZED_KERNELS[src.known_kind][kernel_name])
    shape = [1] * kernel.ndim
    for a in axes:
        shape[a] = kernel.shape[a]
    weights[kernel_name] = (kernel * scale.reshape(shape)).astype(np.float32)
    bias = weights.get("bias", np.zeros_like(scale)).astype(np.float64)
    weights["bias"] = (bias * scale + shift).astype(np.float32)
    config = {**src.layer_config, "use_bias": True}
    names = weight_names(src.known_kind, use_bias=True)
    return replace(src, config=config, weights=[weights[n] for n in names], outputs=list(bn.outputs))


def fold_batch_norms(graph: Graph) -> Graph:
    """Fold every BatchNormalization that directly follows a linear conv/dense used nowhere else (the others
    are left to ``lower_affines``, which makes them 1x1 depthwise convolutions)."""
    consumers = graph.consumers()
    producers = graph.producers()
    op_calls: dict[int, int] = {}
    for node in graph.nodes:
        op_calls[id(node.op)] = op_calls.get(id(node.op), 0) + 1
    shared = {key for key, calls in op_calls.items() if calls > 1}
    folded: dict[str, Node] = {}
    dropped: set[str] = set()
    for bn in graph.nodes:
        if bn.kind != "batch_norm" or len(bn.inputs) != 1:
            continue
        src = producers.get(bn.inputs[0])
        if src is not None and src.name in folded:
            continue
        if _can_fold(src, bn, graph, consumers, shared):
            folded[src.name] = fold_into(src, bn)
            dropped.add(bn.name)
    nodes = [folded.get(n.name, n) for n in graph.nodes if n.name not in dropped]
    return graph.with_nodes(nodes)
