"""Layer normalizations (and ConvNeXt's LayerScale) as steps kerasq can quantize one by one.

``LayerNormalization`` over the last axis computes, per position,

    m = mean(x);  d = x - m;  v = mean(d * d);  n = d * rsqrt(v + epsilon);  y = n * gamma + beta.

As one layer it has no integer kernel in TFLite, so kerasq kept it in float and the INT8 export failed
(ConvNeXt). Written as the steps above, every intermediate tensor is an ordinary activation with a grid of
its own: TFLite runs them as int8 MEAN, SUB, MUL, MEAN, RSQRT, MUL and, for ``gamma`` / ``beta``, one 1x1
depthwise convolution (``affine_depthwise``). ConvNeXt's ``LayerScale`` (``x * gamma`` per channel) becomes
that depthwise convolution as well. The float computation is unchanged up to float rounding.

Layer normalizations over other axes, with ``rms_scaling``, or on tensors of rank other than 2-4 are left as
they are (kept in float).
"""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np

from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.op_kinds import op_kind
from kerasq.graph.rewrites.affine_depthwise import depthwise_affine_nodes
from kerasq.layers import ChannelMean, InverseSqrt


def _splittable(node: Node, graph: Graph) -> bool:
    op = node.op
    if not isinstance(op, keras.layers.LayerNormalization) or node.float_reason or len(node.inputs) != 1:
        return False
    info = graph.tensors[node.inputs[0]]
    rank = len(info.shape)
    axes = [op.axis] if isinstance(op.axis, int) else list(op.axis)
    return (
        rank in (2, 3, 4)
        and info.shape[-1] is not None
        and info.dtype.startswith("float")
        and len(axes) == 1
        and axes[0] % rank == rank - 1
        and not getattr(op, "rms_scaling", False)
    )


def _is_layer_scale(node: Node, graph: Graph) -> bool:
    """keras.applications ConvNeXt's ``LayerScale``: ``x * gamma`` with one gamma per channel."""
    op = node.op
    if type(op).__name__ != "LayerScale" or not type(op).__module__.startswith("keras"):
        return False
    gamma = node.layer_weights
    info = graph.tensors[node.inputs[0]] if len(node.inputs) == 1 else None
    return (
        info is not None
        and len(gamma) == 1
        and gamma[0].shape == (info.shape[-1],)
        and len(info.shape) in (2, 3, 4)
    )


def _node(layer: keras.layers.Layer, inputs: list[int], output: int) -> Node:
    args = (TensorRef(inputs[0]),) if len(inputs) == 1 else ([TensorRef(t) for t in inputs],)
    return Node(
        name=layer.name, op=layer, kind=op_kind(layer), args=args, kwargs={}, inputs=list(inputs),
        outputs=[output], config=layer.get_config(), weights=[],
    )  # fmt: skip


def _split(node: Node, graph: Graph, tensors: dict[int, TensorInfo]) -> list[Node]:
    """The steps of ``node`` (a LayerNormalization); new tensors are added to ``tensors``."""
    op, name = node.op, node.name
    source, target = node.inputs[0], node.outputs[0]
    info = graph.tensors[source]
    full, reduced = (
        TensorInfo(shape=info.shape, dtype=info.dtype),
        TensorInfo(shape=(*info.shape[:-1], 1), dtype=info.dtype),
    )
    ids = {}
    for step, shape in (("mean", reduced), ("centered", full), ("square", full), ("variance", reduced),
                        ("inverse_std", reduced), ("normalized", full)):  # fmt: skip
        ids[step] = max(tensors) + 1
        tensors[ids[step]] = shape
    has_affine = op.scale or op.center
    if not has_affine:
        ids["normalized"] = target
    nodes = [
        _node(ChannelMean(name=f"{name}_mean"), [source], ids["mean"]),
        _node(keras.layers.Subtract(name=f"{name}_centered"), [source, ids["mean"]], ids["centered"]),
        _node(keras.layers.Multiply(name=f"{name}_square"), [ids["centered"], ids["centered"]], ids["square"]),
        _node(ChannelMean(name=f"{name}_variance"), [ids["square"]], ids["variance"]),
        _node(InverseSqrt(op.epsilon, name=f"{name}_inverse_std"), [ids["variance"]], ids["inverse_std"]),
        _node(keras.layers.Multiply(name=f"{name}_normalized"), [ids["centered"], ids["inverse_std"]],
              ids["normalized"]),
    ]  # fmt: skip
    if has_affine:
        weights, channels = iter(node.layer_weights), info.channels
        gamma = next(weights) if op.scale else np.ones(channels)
        beta = next(weights) if op.center else np.zeros(channels)
        view = replace(graph, tensors=tensors)  # the normalized tensor is new
        affine, infos = depthwise_affine_nodes(
            name, ids["normalized"], target, (gamma, beta), view, max(tensors) + 1
        )
        tensors.update(infos)
        nodes += affine
    return nodes


def split_layer_norms(graph: Graph) -> Graph:
    """Every splittable LayerNormalization as its steps, every ConvNeXt LayerScale as a depthwise affine."""
    targets = [n for n in graph.nodes if _splittable(n, graph) or _is_layer_scale(n, graph)]
    if not targets:
        return graph
    tensors, nodes = dict(graph.tensors), []
    chosen = {n.name for n in targets}
    for node in graph.nodes:
        if node.name not in chosen:
            nodes.append(node)
        elif isinstance(node.op, keras.layers.LayerNormalization):
            nodes += _split(node, graph, tensors)
        else:  # LayerScale
            gamma = node.layer_weights[0]
            affine, infos = depthwise_affine_nodes(
                node.name,
                node.inputs[0],
                node.outputs[0],
                (gamma, np.zeros_like(gamma)),
                graph,
                max(tensors) + 1,
            )
            tensors.update(infos)
            nodes += affine
    return replace(graph, nodes=nodes, tensors=tensors)
