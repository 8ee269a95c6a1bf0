"""Fold a residual ``x + conv(x)`` into the conv ("residual_collapsing").

For a stride-1, dilation-1, "same"-padded conv with an odd kernel, the centre tap (kh//2, kw//2) reads
exactly the output pixel's own input pixel, so the identity is a kernel with 1 at the centre on the channel
diagonal:

    x + (W * x + b)  ==  (W + I_c) * x + b,     I_c[kh//2, kw//2, i, i] = 1   (needs cin == cout)

A depthwise conv with ``depth_multiplier=1`` (kernel [kh, kw, c, 1]) gets +1 at the centre for every
channel. The conv node takes the Add's outputs and the Add node disappears; the bias is unchanged.

Requirements: the Add has exactly the two tensors ``x`` and ``conv(x)`` (either order; a
``keras.layers.Add`` layer or ``keras.ops.add``), the conv reads only ``x`` (it keeps x's shape, so the
Add never broadcasts), is linear, channels_last, not shared and not kept in float, and its output is read
by nothing but the Add (in particular it is not a model output). The user's layers are untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import activation_kind
from kerasq.graph.weights import has_plain_weights, named_weights
from kerasq.quantizers.weighted_kinds import kinds_with


def _kernel(node: Node) -> np.ndarray | None:
    """The node's kernel, ``None`` if it carries weights other than kernel (+ bias)."""
    return np.asarray(named_weights(node)["kernel"]) if has_plain_weights(node) else None


def is_identity_foldable(conv: Node, shared: set[int]) -> bool:
    """Whether adding the conv's input to its output can be written into its kernel."""
    if conv.kind not in kinds_with("residual_folding") or conv.float_reason or id(conv.op) in shared:
        return False
    if len(conv.inputs) != 1 or len(conv.outputs) != 1:
        return False
    if activation_kind(conv.activation()) not in (None, "identity"):
        return False
    config = conv.layer_config
    kernel = _kernel(conv)
    kernel_size = np.atleast_1d(config.get("kernel_size", ()))
    if kernel is None or kernel_size.size == 0 or not np.all(kernel_size % 2 == 1):
        return False
    if not np.all(np.atleast_1d(config.get("strides", 1)) == 1):
        return False
    if not np.all(np.atleast_1d(config.get("dilation_rate", 1)) == 1):
        return False
    if config.get("padding") != "same" or config.get("data_format", "channels_last") != "channels_last":
        return False
    if conv.kind == "depthwise_conv":
        return config.get("depth_multiplier", 1) == 1 and kernel.shape[-1] == 1
    return config.get("groups", 1) == 1 and kernel.shape[-2] == kernel.shape[-1]


def add_identity(conv: Node, outputs: list[int]) -> Node:
    """A copy of ``conv`` computing ``x + conv(x)`` and producing ``outputs``."""
    values = list(conv.layer_weights)
    kernel = np.array(values[0], dtype=np.float32)
    centre = tuple(k // 2 for k in kernel.shape[:-2])
    channels = np.arange(kernel.shape[-2])
    if conv.kind == "depthwise_conv":
        kernel[(*centre, channels, 0)] += 1.0
    else:
        kernel[(*centre, channels, channels)] += 1.0
    return replace(conv, weights=[kernel, *values[1:]], outputs=list(outputs))


def _residual_conv(add: Node, graph: Graph, producers: dict, consumers: dict, shared: set) -> Node | None:
    """The conv ``add`` folds into, if ``add`` computes ``x + conv(x)``."""
    if add.kind != "add" or add.float_reason or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    for x, y in (add.inputs, add.inputs[::-1]):
        conv = producers.get(y)
        if conv is None or conv.inputs != [x] or not is_identity_foldable(conv, shared):
            continue
        if len(consumers.get(y, [])) == 1 and y not in graph.output_ids():
            return conv
    return None


def collapse_residual(graph: Graph) -> Graph:
    """Fold every ``Add(x, conv(x))`` with an identity-compatible conv into that conv."""
    producers = graph.producers()
    consumers = graph.consumers()
    shared = graph.shared_operations()
    folded: dict[str, Node] = {}
    dropped: set[str] = set()
    for add in graph.nodes:
        conv = _residual_conv(add, graph, producers, consumers, shared)
        if conv is not None and conv.name not in folded:
            folded[conv.name] = add_identity(conv, add.outputs)
            dropped.add(add.name)
    if not folded:
        return graph
    return graph.with_nodes([folded.get(n.name, n) for n in graph.nodes if n.name not in dropped])
