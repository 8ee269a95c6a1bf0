"""Move the ``activation=`` argument of weighted layers into its own node.

A conv with ``activation="swish"`` computes two things a device runs separately unless it fuses them.
As separate nodes, the platform's fusing patterns decide: fused pairs (conv + relu on TFLite) quantize only
the activation output; unfused ones (conv + swish on TFLite) quantize both, as the device does.
"""

from __future__ import annotations

from dataclasses import replace

import keras

from kerasq.graph.model_graph import Graph, Node, TensorRef
from kerasq.graph.op_kinds import activation_kind, is_weighted, op_kind


def split_activations(graph: Graph) -> Graph:
    """Every weighted node with a non-linear activation becomes (linear node, Activation node)."""
    nodes: list[Node] = []
    tensors = dict(graph.tensors)
    next_id = max(tensors) + 1
    for node in graph.nodes:
        activation = node.activation() if is_weighted(node.kind) else None
        if activation is None or activation_kind(activation) == "identity" or node.float_reason:
            nodes.append(node)
            continue
        config = node.layer_config
        act_layer = keras.layers.Activation(config["activation"], name=f"{node.name}_activation")
        linear = replace(node, config={**config, "activation": "linear"}, outputs=[next_id])
        tensors[next_id] = graph.tensors[node.outputs[0]]
        act = Node(
            name=act_layer.name, op=act_layer, kind=op_kind(act_layer), args=(TensorRef(next_id),), kwargs={},
            inputs=[next_id], outputs=list(node.outputs), config=act_layer.get_config(), weights=[],
        )  # fmt: skip
        next_id += 1
        nodes += [linear, act]
    return replace(graph, nodes=nodes, tensors=tensors)
