"""The graph kerasq works on: operation calls (nodes) connected by tensors (integer ids).

A node records *how* an operation was called (its args/kwargs with tensors replaced by ``TensorRef``),
so the builder can replay the call with new tensors. Nodes may carry replacement weights and config
(e.g. after batch-norm folding) so the user's layers are never touched.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np

from kerasq.errors import ModelError


@dataclass(frozen=True)
class TensorRef:
    """Placeholder for a graph tensor inside a node's call arguments."""

    id: int


@dataclass
class Node:
    """One call of an operation.

    Attributes:
        name: unique node name (the layer's name, suffixed for shared layers / flattened sub-models).
        op: the original operation (a user layer or a ``keras.ops`` operation); never mutated.
        kind: canonical kind (see ``op_kinds``), ``None`` if unknown.
        args, kwargs: call arguments with tensors replaced by ``TensorRef``.
        inputs: ids of the tensors read, in argument order.
        outputs: ids of the tensors produced.
        config: layer config to clone from (defaults to ``op.get_config()``).
        weights: weights to load into the clone (defaults to ``op.get_weights()``).
        float_reason: when set, the node is kept in float and this says why.
    """

    name: str
    op: keras.Operation
    kind: str | None
    args: tuple
    kwargs: dict
    inputs: list[int]
    outputs: list[int]
    config: dict[str, Any] | None = None
    weights: list[np.ndarray] | None = None
    float_reason: str | None = None

    @property
    def layer_config(self) -> dict[str, Any]:
        return dict(self.config) if self.config is not None else self.op.get_config()

    @property
    def layer_weights(self) -> list[np.ndarray]:
        if self.weights is not None:
            return self.weights
        return (
            [np.asarray(w) for w in self.op.get_weights()] if isinstance(self.op, keras.layers.Layer) else []
        )

    @property
    def known_kind(self) -> str:
        """``kind``, for code that handles only nodes of a known kind (weighted layers, lowered activations)."""
        if self.kind is None:
            raise ModelError(
                f"Layer {self.name!r} ({type(self.op).__name__}) is of a kind kerasq does not know, but was "
                "handled as a known one; report this as a kerasq bug."
            )
        return self.kind

    def activation(self) -> Any:
        """The ``activation=`` argument of a weighted layer after any rewrite (None if it has none)."""
        name = self.layer_config.get("activation")
        return keras.activations.get(name) if name is not None else None


@dataclass
class TensorInfo:
    """Static facts about a tensor: its shape (batch dim included as None) and dtype."""

    shape: tuple[int | None, ...]
    dtype: str

    @property
    def channels(self) -> int:
        """The last dimension (channels_last), for the rewrites that need it known."""
        size = self.shape[-1]
        if size is None:
            raise ModelError(
                f"A tensor of shape {self.shape} has an unknown channel count (last dimension); "
                "give the model's layers a fixed number of channels."
            )
        return size


@dataclass
class Graph:
    """A flattened, topologically ordered view of a Keras model."""

    name: str
    inputs: list[int]
    input_names: list[str]
    outputs: Any  # nested structure of TensorRef, mirroring the model's outputs
    nodes: list[Node]
    tensors: dict[int, TensorInfo] = field(default_factory=dict)
    # model input id -> per-sample shape in the calibration data (sizes the dims the model leaves open)
    sample_shapes: dict[int, tuple[int, ...]] | None = None

    def output_ids(self) -> list[int]:
        return [ref.id for ref in keras.tree.flatten(self.outputs)]

    def consumers(self) -> dict[int, list[Node]]:
        """Tensor id -> nodes reading it (in topological order)."""
        result: dict[int, list[Node]] = {}
        for node in self.nodes:
            for tid in dict.fromkeys(node.inputs):
                result.setdefault(tid, []).append(node)
        return result

    def producers(self) -> dict[int, Node]:
        return {tid: node for node in self.nodes for tid in node.outputs}

    def layer_calls(self, among: Collection[str] | None = None) -> dict[str, tuple[str, ...]]:
        """First call -> every call (graph order) of each operation: nodes calling one layer share its weights.

        ``among``: only the nodes named there (e.g. ``plan.weights``: the layers with quantized kernels)."""
        calls: dict[int, list[str]] = {}
        for node in self.nodes:
            if among is None or node.name in among:
                calls.setdefault(id(node.op), []).append(node.name)
        return {names[0]: tuple(names) for names in calls.values()}

    def shared_operations(self) -> set[int]:
        """``id()`` of every operation called by more than one node (shared layers)."""
        by_name = {node.name: node for node in self.nodes}
        return {id(by_name[first].op) for first, calls in self.layer_calls().items() if len(calls) > 1}

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} in graph {self.name!r}")

    def with_nodes(self, nodes: list[Node]) -> Graph:
        return replace(self, nodes=nodes)


def resolve_refs(structure: Any, tensors: dict[int, Any]) -> Any:
    """``structure`` (a node's call arguments) with every ``TensorRef`` replaced by ``tensors[ref.id]``."""
    return keras.tree.map_structure(lambda v: tensors[v.id] if isinstance(v, TensorRef) else v, structure)


def fresh_inputs(graph: Graph) -> dict[int, Any]:
    """A new ``keras.Input`` per model input of ``graph`` (its shape, dtype and name), by tensor id, in order:
    the start of every replay of the graph into a new model."""
    return {
        tid: keras.Input(batch_shape=graph.tensors[tid].shape, dtype=graph.tensors[tid].dtype, name=name)
        for tid, name in zip(graph.inputs, graph.input_names, strict=True)
    }
