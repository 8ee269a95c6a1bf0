"""Move a bounded ReLU's bound to a power of two ("relu_bound_to_power_of_2").

A power-of-two bound makes the ReLU's output range a power-of-two quantization grid. With the pattern
W1 -> ReLU(max_value=m) -> W2 (linear in its input), B = 2**ceil(log2(m)) and s = B / m > 1:

    W2(min(max(W1 x, 0), m))  ==  (W2 / s)(min(max(s W1 x, 0), s m))      and s m = B,

because relu/clip commute with a positive scale. So W1's kernel and bias are multiplied by s (one scalar
for the whole tensor, any layout: conv, dense or depthwise), the ReLU's ``max_value`` becomes B and W2's
kernel is divided by s (its bias and activation are unchanged). Skipped when m is already a power of two.

The ReLU may be a ``keras.layers.ReLU`` with a finite ``max_value`` (``negative_slope`` and ``threshold``
zero; its node gets a new config) or any other relu6 node (``Activation("relu6")``, e.g. from
``split_activations``, or ``keras.ops.relu6``), which is replaced by a fresh ``keras.layers.ReLU``.
W1 must be linear with only the ReLU reading its output; W2 must read only the ReLU's output, and the ReLU's
output must be read by nothing else (nor be a model output). Shared or float-kept nodes are left alone.
The user's layers are untouched.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TypeGuard

import keras
import numpy as np

from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import activation_kind, op_kind
from kerasq.graph.weights import has_plain_weights
from kerasq.quantizers.weighted_kinds import kinds_with

_SCALABLE_KINDS = kinds_with("relu_bound_scaling")


def power_of_2_bound(bound: float) -> float:
    """The smallest power of two >= ``bound`` (``bound`` > 0)."""
    exponent = math.ceil(math.log2(bound))
    if 2.0 ** (exponent - 1) >= bound:  # guard against log2 rounding up
        exponent -= 1
    return 2.0**exponent


def relu_bound(node: Node) -> float | None:
    """The finite upper bound of a plain bounded ReLU node, ``None`` if it is not one."""
    if node.kind not in ("relu", "relu6") or len(node.inputs) != 1 or len(node.outputs) != 1:
        return None
    if isinstance(node.op, keras.layers.ReLU):
        config = node.layer_config
        bound = config.get("max_value")
        if config.get("negative_slope") or config.get("threshold") or bound is None:
            return None
        bound = float(bound)
        return bound if math.isfinite(bound) and bound > 0 else None
    return 6.0 if node.kind == "relu6" else None


def _scalable(node: Node | None, shared: set[int]) -> TypeGuard[Node]:
    return (
        node is not None
        and node.kind in _SCALABLE_KINDS
        and not node.float_reason
        and id(node.op) not in shared
        and len(node.outputs) == 1
        and has_plain_weights(node)
    )


def scale_weights(node: Node, kernel_scale: float, bias_scale: float) -> Node:
    """A copy of ``node`` with its kernel and bias (if any) multiplied by scalars."""
    values = [np.asarray(v) for v in node.layer_weights]
    kernel = (values[0].astype(np.float64) * kernel_scale).astype(values[0].dtype)
    rest = [(v.astype(np.float64) * bias_scale).astype(v.dtype) for v in values[1:]]
    return replace(node, weights=[kernel, *rest])


def with_bound(relu: Node, bound: float) -> Node:
    """A copy of the ReLU node clipping at ``bound`` (a fresh ReLU layer for non-ReLU relu6 nodes)."""
    if isinstance(relu.op, keras.layers.ReLU):
        return replace(relu, config={**relu.layer_config, "max_value": bound}, kind="relu")  # bound != 6
    op = keras.layers.ReLU(max_value=bound, name=relu.name)
    return replace(relu, op=op, kind=op_kind(op), config=op.get_config(), weights=[])


def bound_relu_to_power_of_2(graph: Graph) -> Graph:
    """Rescale every W1 -> bounded ReLU -> W2 chain so that the ReLU's bound is a power of two."""
    producers = graph.producers()
    consumers = graph.consumers()
    shared = graph.shared_operations()
    outputs = set(graph.output_ids())
    current: dict[str, Node] = {}  # node name -> rewritten node (a node may be both a W2 and a W1)
    for relu in graph.nodes:
        bound = relu_bound(relu)
        if bound is None or relu.float_reason or id(relu.op) in shared:
            continue
        new_bound = power_of_2_bound(bound)
        if new_bound == bound:
            continue
        src_id, out_id = relu.inputs[0], relu.outputs[0]
        first = producers.get(src_id)
        readers = consumers.get(out_id, [])
        if not _scalable(first, shared) or activation_kind(first.activation()) not in (None, "identity"):
            continue
        if len(consumers.get(src_id, [])) != 1 or src_id in outputs:
            continue
        if len(readers) != 1 or out_id in outputs:
            continue
        second = readers[0]
        if not _scalable(second, shared) or second.inputs != [out_id]:
            continue
        s = new_bound / bound
        current[first.name] = scale_weights(current.get(first.name, first), s, s)
        current[relu.name] = with_bound(relu, new_bound)
        current[second.name] = scale_weights(current.get(second.name, second), 1.0 / s, 1.0)
    if not current:
        return graph
    return graph.with_nodes([current.get(n.name, n) for n in graph.nodes])
