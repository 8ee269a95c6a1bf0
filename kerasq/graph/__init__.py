"""Reading Keras models into kerasq's graph view, and graph rewrites."""

from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.reader import UnsupportedModelError, check_graph_model, read_model

__all__ = [
    "Graph",
    "Node",
    "TensorInfo",
    "TensorRef",
    "UnsupportedModelError",
    "check_graph_model",
    "read_model",
]
