"""Standalone per-channel affine layers as 1x1 depthwise convolutions.

A BatchNormalization with no conv / dense to fold into (ResNetV2's pre-activation BNs, a BN after an Add),
a ``Normalization``, a ``Rescaling`` or a ``keras.ops`` add / subtract / multiply with a constant (MobileNetV3's
hard sigmoid) computes ``y = x * scale + offset`` along the last (channel) axis:
exactly a depthwise convolution with a 1x1 kernel holding ``scale`` and a bias holding ``offset``. As one,
it gets per-channel weights and one output grid, and TFLite runs it as one integer DEPTHWISE_CONV_2D
instead of float MUL / SUB / DIV ops. Affines that follow each other (EfficientNetV2's Rescaling then
Normalization) compose into one convolution.

Tensors [batch, steps, channels] use a DepthwiseConv1D. Tensors [batch, channels] (a BN after a Dense with
an activation) are reshaped to [batch, 1, 1, channels] around a DepthwiseConv2D: reshapes keep their input's
grid and cost nothing in TFLite, and the weights stay C values (a diagonal Dense would hold C * C).
Affines on other ranks or axes (channels_first, per-position statistics) are left as they are.
"""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np

from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.op_kinds import op_kind

AFFINE_KINDS = ("batch_norm", "normalization", "rescaling")
SCALAR_KINDS = ("add", "subtract", "multiply")  # keras.ops calls of a tensor and a constant


def bn_scale_shift(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) such that BN(x) = x * scale + shift."""
    op = bn.op
    mean = np.asarray(op.moving_mean, dtype=np.float64)
    var = np.asarray(op.moving_variance, dtype=np.float64)
    gamma = np.asarray(op.gamma, dtype=np.float64) if op.scale else np.ones_like(mean)
    beta = np.asarray(op.beta, dtype=np.float64) if op.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + op.epsilon)
    return scale, beta - mean * scale


def per_channel(value: object, channels: int, rank: int) -> np.ndarray | None:
    """``value`` as ``channels`` values along the last axis of a rank-``rank`` tensor, if it broadcasts so
    (a scalar, [C], or [1, ..., 1, C]); None if it varies along another axis."""
    array = np.asarray(value, np.float64)
    if array.ndim > rank or any(d != 1 for d in array.shape[:-1]):
        return None
    if array.ndim and array.shape[-1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(-1), (channels,)).copy()


def _last_axis(axis: object, rank: int) -> bool:
    axes = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else None
    return axes is not None and len(axes) == 1 and axes[0] % rank == rank - 1


def _normalization(op: keras.layers.Layer, channels: int, rank: int) -> tuple | None:
    if op.mean is None or op.variance is None:
        return None
    mean = per_channel(keras.ops.convert_to_numpy(op.mean), channels, rank)
    var = per_channel(keras.ops.convert_to_numpy(op.variance), channels, rank)
    if mean is None or var is None:
        return None
    spread = np.maximum(np.sqrt(var), keras.config.epsilon())  # what Normalization.call divides by
    return (spread, mean) if op.invert else (1.0 / spread, -mean / spread)


def _rescaling(op: keras.layers.Layer, channels: int, rank: int) -> tuple | None:
    scale, offset = per_channel(op.scale, channels, rank), per_channel(op.offset, channels, rank)
    if scale is None or offset is None:
        return None
    if np.ndim(op.scale) and keras.config.image_data_format() == "channels_first":
        return None  # Rescaling then broadcasts a vector scale along axis 1
    return scale, offset


def affine_of(node: Node, graph: Graph) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (scale, offset) with node(x) = x * scale + offset on the last axis, or None."""
    if node.kind not in AFFINE_KINDS + SCALAR_KINDS or node.float_reason or len(node.inputs) != 1:
        return None
    if len(node.outputs) != 1:
        return None
    info = graph.tensors[node.inputs[0]]
    rank, channels = len(info.shape), info.shape[-1]
    if rank not in (2, 3, 4) or channels is None or not info.dtype.startswith("float"):
        return None
    if graph.tensors[node.outputs[0]].dtype != info.dtype:  # e.g. a float64 constant promotes the result
        return None
    op = node.op
    if node.kind == "batch_norm":
        return bn_scale_shift(node) if _last_axis(op.axis, rank) else None
    if node.kind == "normalization":
        return _normalization(op, channels, rank)
    if node.kind == "rescaling":
        return _rescaling(op, channels, rank)
    return _constant_op(node, channels, rank)


def _constant_op(node: Node, channels: int, rank: int) -> tuple | None:
    """``x + c``, ``x - c``, ``c - x``, ``x * c`` (``keras.ops`` calls, e.g. MobileNetV3's hard sigmoid
    ``relu6(x + 3) * (1 / 6)``) with a constant ``c`` per channel or scalar."""
    if isinstance(node.op, keras.layers.Layer) or node.kwargs or len(node.args) != 2:
        return None
    is_tensor = [isinstance(a, TensorRef) for a in node.args]
    constant = node.args[is_tensor.index(False)] if is_tensor.count(True) == 1 else None
    if isinstance(constant, bool) or not isinstance(constant, (int, float, np.number, np.ndarray)):
        return None
    c = per_channel(constant, channels, rank)
    if c is None:
        return None
    ones = np.ones(channels)
    if node.kind == "multiply":
        return c, np.zeros(channels)
    if node.kind == "add":
        return ones, c
    return (ones, -c) if is_tensor[0] else (-ones, c)


def compose(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> tuple:
    """The affine of ``second(first(x))``."""
    return first[0] * second[0], first[1] * second[0] + second[1]


def depthwise_affine_nodes(
    name: str, source: int, target: int, affine: tuple, graph: Graph, new_id: int
) -> tuple[list[Node], dict[int, TensorInfo]]:
    """Nodes computing ``affine`` from tensor ``source`` into tensor ``target`` (and any new tensors)."""
    scale, offset = (np.asarray(v, np.float32) for v in affine)
    info = graph.tensors[source]
    rank, channels = len(info.shape), info.channels
    layer = keras.layers.DepthwiseConv1D if rank == 3 else keras.layers.DepthwiseConv2D
    conv = layer(kernel_size=1, use_bias=True, name=name)
    kernel = scale.reshape((1, channels, 1) if rank == 3 else (1, 1, channels, 1))
    if rank != 2:
        return [_node(conv, source, target, [kernel, offset])], {}
    flat, image = new_id, new_id + 1
    to_image = keras.layers.Reshape((1, 1, channels), name=f"{name}_to_image")
    to_flat = keras.layers.Reshape((channels,), name=f"{name}_to_flat")
    four_d = TensorInfo(shape=(info.shape[0], 1, 1, channels), dtype=graph.tensors[target].dtype)
    nodes = [_node(to_image, source, image, []), _node(conv, image, flat, [kernel, offset]),
             _node(to_flat, flat, target, [])]  # fmt: skip
    return nodes, {image: four_d, flat: four_d}


def _node(layer: keras.layers.Layer, source: int, target: int, weights: list[np.ndarray]) -> Node:
    return Node(
        name=layer.name, op=layer, kind=op_kind(layer), args=(TensorRef(source),), kwargs={},
        inputs=[source], outputs=[target], config=layer.get_config(), weights=weights,
    )  # fmt: skip


def lower_affines(graph: Graph) -> Graph:
    """Every standalone per-channel affine node (chains of them composed) becomes a 1x1 depthwise conv."""
    affines = {n.name: a for n in graph.nodes if (a := affine_of(n, graph)) is not None}
    if not affines:
        return graph
    consumers, producers = graph.consumers(), graph.producers()
    outputs = set(graph.output_ids())
    chains: dict[str, list[Node]] = {}  # first node of a chain -> its nodes
    head: dict[str, str] = {}
    for node in graph.nodes:
        if node.name not in affines:
            continue
        src, tensor = producers.get(node.inputs[0]), node.inputs[0]
        joins = src is not None and src.name in affines and len(consumers[tensor]) == 1
        head[node.name] = head[src.name] if src is not None and joins and tensor not in outputs else node.name
        chains.setdefault(head[node.name], []).append(node)
    tensors, nodes = dict(graph.tensors), []
    for node in graph.nodes:
        if node.name not in head:
            nodes.append(node)
        elif head[node.name] == node.name:  # the chain is emitted where it starts
            chain = chains[node.name]
            affine = affines[chain[0].name]
            for later in chain[1:]:
                affine = compose(affine, affines[later.name])
            new, infos = depthwise_affine_nodes(
                chain[-1].name, node.inputs[0], chain[-1].outputs[0], affine, graph, max(tensors) + 1
            )
            nodes += new
            tensors.update(infos)
    return replace(graph, nodes=nodes, tensors=tensors)
