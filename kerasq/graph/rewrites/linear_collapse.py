"""Collapse two consecutive linear layers into one ("linear_collapsing").

A linear conv followed by a pointwise (1x1, stride 1) linear conv is one conv:

    V * (W * x + b) + c  ==  (W @ V) * x + (b @ V + c)

with W[..., cin, cmid] the first kernel (any size/stride/dilation/padding), V[cmid, cout] the pointwise
kernel and ``@`` contracting the channel axis, so W'[kh, kw, cin, cout] = sum_m W[kh, kw, cin, m] V[m, cout].
Dense -> Dense is the same identity with W1 @ W2 and b1 @ W2 + b2. Missing biases count as zero; the merged
node always has ``use_bias=True``.

The merged node keeps the first node's op, name and config (``filters``/``units`` become the second's) and
takes the second node's outputs; the second node disappears. Chains collapse fully. Nothing collapses when
either layer is shared, kept in float, has a non-linear activation, or when the intermediate tensor is read
by anything else (another node or the model's outputs), or when the merged kernel would hold more weights
than the pair (e.g. a bottleneck 32 -> 16 -> 96 would become 32 -> 96: more memory and MACs). The user's layers
are untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.errors import ModelError
from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import activation_kind
from kerasq.graph.weights import has_plain_weights, named_weights

_COLLAPSIBLE_KINDS = ("conv", "dense")


def linear_weights(node: Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(kernel, bias or None) of a plain conv/dense node; ``None`` if it carries other weights."""
    if not has_plain_weights(node):
        return None  # e.g. LoRA or Keras-native quantization weights
    weights = named_weights(node)
    return np.asarray(weights["kernel"]), (np.asarray(weights["bias"]) if "bias" in weights else None)


def _plain_linear_weights(node: Node) -> tuple[np.ndarray, np.ndarray | None]:
    """``linear_weights`` of a node that has them (one ``_is_linear_layer`` accepted)."""
    weights = linear_weights(node)
    if weights is None:
        raise ModelError(
            f"Layer {node.name!r} carries weights other than a kernel and a bias; it cannot be collapsed."
        )
    return weights


def _is_linear_layer(node: Node, shared: set[int]) -> bool:
    if node.kind not in _COLLAPSIBLE_KINDS or node.float_reason or id(node.op) in shared:
        return False
    if len(node.inputs) != 1 or len(node.outputs) != 1 or linear_weights(node) is None:
        return False
    config = node.layer_config
    if activation_kind(node.activation()) not in (None, "identity"):
        return False
    return config.get("data_format", "channels_last") == "channels_last" and config.get("groups", 1) == 1


def _is_pointwise(node: Node) -> bool:
    """A conv computing a per-pixel matmul (or any dense layer)."""
    if node.kind == "dense":
        return True
    config = node.layer_config
    kernel_size = np.atleast_1d(config.get("kernel_size", ()))
    strides = np.atleast_1d(config.get("strides", 1))
    return kernel_size.size > 0 and bool(np.all(kernel_size == 1)) and bool(np.all(strides == 1))


def can_collapse(first: Node, second: Node, graph: Graph, consumers: dict, shared: set[int]) -> bool:
    """Whether ``second`` (reading only ``first``'s output) can be merged into ``first``."""
    if not (_is_linear_layer(first, shared) and _is_linear_layer(second, shared)):
        return False
    if type(first.op) is not type(second.op) or first.kind != second.kind or not _is_pointwise(second):
        return False
    mid = first.outputs[0]
    if second.inputs != [mid] or len(consumers.get(mid, [])) != 1 or mid in graph.output_ids():
        return False
    kernel, pointwise = _plain_linear_weights(first)[0], _plain_linear_weights(second)[0]
    if kernel.shape[-1] != pointwise.shape[-2] or pointwise.size != np.prod(pointwise.shape[-2:]):
        return False
    # only when it does not grow the model: merged params (and MACs, same positions) <= the pair's
    merged = kernel.size // kernel.shape[-1] * pointwise.shape[-1]
    return merged <= kernel.size + pointwise.size


def collapse_pair(first: Node, second: Node) -> Node:
    """A copy of ``first`` computing ``second(first(x))``."""
    kernel, bias = _plain_linear_weights(first)
    second_kernel, second_bias = _plain_linear_weights(second)
    cmid, cout = second_kernel.shape[-2:]
    v = second_kernel.astype(np.float64).reshape((cmid, cout))
    b = np.zeros(cmid) if bias is None else bias.astype(np.float64)
    c = np.zeros(cout) if second_bias is None else second_bias.astype(np.float64)
    new_kernel = (kernel.astype(np.float64) @ v).astype(np.float32)
    new_bias = (b @ v + c).astype(np.float32)
    size_key = "units" if first.kind == "dense" else "filters"
    config = {**first.layer_config, size_key: int(cout), "use_bias": True}
    return replace(first, config=config, weights=[new_kernel, new_bias], outputs=list(second.outputs))


def collapse_linear(graph: Graph) -> Graph:
    """Merge every linear conv -> pointwise conv and dense -> dense pair; chains collapse fully."""
    consumers = graph.consumers()
    shared = graph.shared_operations()
    nodes: list[Node] = []
    producer_index: dict[int, int] = {}  # tensor id -> index in ``nodes`` of its (possibly merged) producer
    changed = False
    for node in graph.nodes:
        idx = producer_index.get(node.inputs[0]) if len(node.inputs) == 1 else None
        if idx is not None and can_collapse(nodes[idx], node, graph, consumers, shared):
            nodes[idx] = collapse_pair(nodes[idx], node)
            changed = True
        else:
            nodes.append(node)
            idx = len(nodes) - 1
        for tid in node.outputs:
            producer_index[tid] = idx
    return graph.with_nodes(nodes) if changed else graph
