"""Split SeparableConv into DepthwiseConv + 1x1 Conv, the two kernels devices actually run.

Edge runtimes (TFLite among them) have no separable op: they execute a depthwise convolution, materialize
its output, then a pointwise convolution. Splitting the node makes that intermediate tensor visible, so it
gets its own quantizer and the Keras quantized model computes what the device computes.
"""

from __future__ import annotations

from dataclasses import replace

import keras

from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.op_kinds import op_kind
from kerasq.graph.weights import named_weights

_DEPTHWISE = {1: keras.layers.DepthwiseConv1D, 2: keras.layers.DepthwiseConv2D}
_POINTWISE = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}


def _split(node: Node, graph: Graph, new_tensor: int) -> tuple[Node, Node, TensorInfo]:
    config = node.layer_config
    rank = len(config["kernel_size"])
    weights = named_weights(node)
    depthwise = _DEPTHWISE[rank](
        kernel_size=config["kernel_size"], strides=config["strides"], padding=config["padding"],
        depth_multiplier=config["depth_multiplier"], data_format=config["data_format"],
        dilation_rate=config["dilation_rate"], use_bias=False, name=f"{node.name}_depthwise",
    )  # fmt: skip
    pointwise = _POINTWISE[rank](
        filters=config["filters"], kernel_size=1, data_format=config["data_format"], use_bias=config["use_bias"],
        activation=config["activation"], name=f"{node.name}_pointwise",
    )  # fmt: skip
    in_shape = graph.tensors[node.inputs[0]].shape
    mid = TensorInfo(
        shape=tuple(depthwise.compute_output_shape(in_shape)), dtype=graph.tensors[node.outputs[0]].dtype
    )
    first = Node(
        name=depthwise.name, op=depthwise, kind=op_kind(depthwise), args=node.args, kwargs=node.kwargs,
        inputs=list(node.inputs), outputs=[new_tensor], config=depthwise.get_config(),
        weights=[weights["depthwise_kernel"]],
    )  # fmt: skip
    second = Node(
        name=pointwise.name, op=pointwise, kind=op_kind(pointwise), args=(TensorRef(new_tensor),), kwargs={},
        inputs=[new_tensor], outputs=list(node.outputs), config=pointwise.get_config(),
        weights=[weights["pointwise_kernel"]] + ([weights["bias"]] if "bias" in weights else []),
    )  # fmt: skip
    return first, second, mid


def split_separable_convs(graph: Graph) -> Graph:
    """Replace every SeparableConv1D/2D node with a depthwise node followed by a pointwise node."""
    nodes: list[Node] = []
    tensors = dict(graph.tensors)
    next_id = max(tensors) + 1
    for node in graph.nodes:
        if node.kind != "separable_conv" or node.float_reason:
            nodes.append(node)
            continue
        first, second, mid = _split(node, graph, next_id)
        tensors[next_id] = mid
        next_id += 1
        nodes += [first, second]
    return replace(graph, nodes=nodes, tensors=tensors)
