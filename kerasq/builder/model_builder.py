"""Build a Keras model from a ``Graph``: fresh clones of every layer, optional quantizers inserted.

One builder serves every stage: with no parameters it yields the (folded) float model used to observe
statistics; with parameters it yields the quantized model. Quantized weighted layers are wrapped in
``QuantizeWrapper``; every planned activation tensor gets an ``ActivationQuantizer`` right after it.

A layer applied several times (nodes calling the same operation) stays one layer: one clone, one wrapper, one
quantized kernel, whose grid is its first call's. Its calls must agree on the kernel's bits (mixed precision
gives them one unit); grids that disagree are refused rather than mixed into a corrupt kernel.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from kerasq.errors import ModelError
from kerasq.graph.model_graph import Graph, Node, resolve_refs
from kerasq.plan import QuantizationParams, QuantizationPlan, inherited_from
from kerasq.quantizers import ActivationQuantizer, FusedTensorRange, QuantizeWrapper
from kerasq.quantizers.grid import KernelGrid, QuantParams


@dataclass
class BuiltModel:
    model: keras.Model
    tensors: dict[int, Any]  # graph tensor id -> the tensor in ``model`` (before any activation quantizer)
    layers: dict[str, keras.layers.Layer]  # node name -> layer called for it (wrapper or clone)


class LayerPool:
    """Built float clones (of one ``build_model`` without grids) a later build may wrap instead of cloning.

    Creating a layer's variables (and running its initializers, only for ``set_weights`` to overwrite them) is
    most of a build's cost. PTQ builds the float model of its graph for statistics, then the quantized model of
    nearly the same graph: each quantized layer can wrap the clone already built for statistics. A clone is
    handed out at most once (two models never share variables), and only for a node of the same operation,
    config and input shapes as the one it was built for; the build loads the node's own weights into it.
    """

    def __init__(self, graph: Graph, built: BuiltModel, names: set[str]) -> None:
        # A layer called for several nodes stays out (the quantized model calls the unwrapped ones directly).
        calls = Counter(id(layer) for layer in built.layers.values())
        self._entries = {
            node.name: (node, _input_shapes(graph, node), built.layers[node.name])
            for node in graph.nodes
            if node.name in names
            and isinstance(built.layers.get(node.name), keras.layers.Layer)
            and calls[id(built.layers[node.name])] == 1
        }

    def take(self, graph: Graph, node: Node) -> keras.layers.Layer | None:
        """The clone built for a node like ``node`` (then no longer in the pool), or None."""
        entry = self._entries.get(node.name)
        if entry is None:
            return None
        source, shapes, layer = entry
        if source.op is not node.op or shapes != _input_shapes(graph, node) or not _same(source, node):
            return None
        del self._entries[node.name]
        return layer


def _input_shapes(graph: Graph, node: Node) -> tuple:
    return tuple(tuple(graph.tensors[t].shape) for t in node.inputs)


def _same(a: Node, b: Node) -> bool:
    """Whether two nodes clone to the same layer (configs holding arrays compare unequal: not reused)."""
    try:
        return a.kind == b.kind and bool(a.layer_config == b.layer_config)
    except (TypeError, ValueError):
        return False


def clone_operation(node: Node) -> keras.Operation:
    """A fresh copy of the node's operation (config from the node, so rewrites apply)."""
    op = node.op
    if type(op) is keras.layers.Lambda and node.config is None:
        return _copy_lambda(op)
    if isinstance(op, keras.layers.Layer):
        return _layer_from_config(op, node)
    try:
        return type(op).from_config(op.get_config())
    except Exception:  # an op without a usable config: it is stateless, so calling it again is safe
        return op


def _copy_lambda(op: keras.layers.Lambda) -> keras.layers.Lambda:
    """A new ``Lambda`` calling the very same Python function.

    ``from_config`` would rebuild the function from its serialized bytecode, which Keras refuses in safe mode
    (and which fails for callables it cannot serialize, such as ``functools.partial``). The copy is a new
    layer, so the user's ``Lambda`` gains no call and the quantized model does not share it.
    """
    return keras.layers.Lambda(
        op.function,
        output_shape=_lambda_output_shape(op),
        mask=op.mask,
        arguments=dict(op.arguments),
        name=op.name,
        dtype=op.dtype_policy,
        trainable=op.trainable,
    )


def _lambda_output_shape(op: keras.layers.Lambda) -> Any:
    """The ``output_shape`` the user gave ``op`` (None if none); its own shape rule when that is a function."""
    try:
        shape = op.get_config().get("output_shape")
    except Exception:  # function or arguments Keras cannot serialize; the layer's own rule is exact
        return op.compute_output_shape
    if isinstance(shape, dict) and "class_name" in shape:  # a function, stored as (unsafe) bytecode
        return op.compute_output_shape
    return shape


def _layer_from_config(layer: keras.layers.Layer, node: Node) -> keras.layers.Layer:
    try:
        return type(layer).from_config(node.layer_config)
    except Exception as err:
        raise ModelError(
            f"Layer {layer.name!r} ({type(layer).__name__}) cannot be copied: "
            f"{type(layer).__name__}.from_config(layer.get_config()) fails ({type(err).__name__}: {_gist(err)}). "
            "kerasq builds the quantized model from fresh copies of every layer. Make get_config return every "
            "__init__ argument (and from_config accept it), or replace the layer with keras.ops calls or a "
            "keras.layers.Lambda."
        ) from err


def _gist(err: Exception) -> str:
    """The first sentence of ``err``: what went wrong, without advice meant for another context (loading)."""
    return str(err).split(". ")[0].rstrip(".")


def quantizer_name(producer: str, index: int, total: int) -> str:
    return f"{producer}_activation_quantizer" if total == 1 else f"{producer}_{index}_activation_quantizer"


def _neighbour_kinds(graph: Graph) -> dict[int, tuple[str, str]]:
    """Tensor id -> (kind of its producer, kind of its first consumer); "" where there is none."""
    kinds: dict[int, list[str]] = {}
    for node in graph.nodes:
        for tid in node.outputs:
            kinds.setdefault(tid, [node.kind or "", ""])
        for tid in node.inputs:
            entry = kinds.setdefault(tid, ["", ""])
            entry[1] = entry[1] or node.kind or ""
    return {tid: (producer, consumer) for tid, (producer, consumer) in kinds.items()}


def build_model(
    graph: Graph,
    plan: QuantizationPlan | None = None,
    params: QuantizationParams | None = None,
    name: str | None = None,
    wrapper: type[QuantizeWrapper] = QuantizeWrapper,
    activation_quantizer: type[ActivationQuantizer] = ActivationQuantizer,
    reference_inputs: dict[int, np.ndarray] | None = None,
    pool: LayerPool | None = None,
) -> BuiltModel:
    """Replay ``graph`` with cloned layers; insert quantizers where ``params`` has grids.

    ``reference_inputs``: model input id -> a few calibration samples, kept by the input's quantizer
    (exporters run their file on them, at their shape, and compare it with the quantized model).
    ``wrapper`` / ``activation_quantizer``: the layer classes to insert (subclasses let a training stage, such
    as gradient-based rounding, add its own variables while the graph and the grids stay the same).
    ``pool``: built float clones the quantized layers may wrap instead of new clones (``LayerPool``).
    """
    act_params = params.activations if params else {}
    weight_params = params.weights if params else {}
    fused_params = params.fused if params else {}
    kinds = _neighbour_kinds(graph) if fused_params else {}
    built = _Tensors(
        activations=act_params,
        fused=fused_params,
        kinds=kinds,
        references=reference_inputs or {},
        activation_quantizer=activation_quantizer,
    )

    inputs = []
    for tid, input_name in zip(graph.inputs, graph.input_names, strict=True):
        info = graph.tensors[tid]
        inputs.append(keras.Input(batch_shape=info.shape, dtype=info.dtype, name=input_name))
        built.publish([tid], [inputs[-1]], input_name)

    by_op: dict[int, keras.Operation] = {}  # shared layers stay shared
    layers: dict[str, keras.layers.Layer] = {}
    weights_to_load: list[tuple[keras.layers.Layer, Node]] = []
    for node in graph.nodes:
        op = by_op.get(id(node.op))
        if op is None:
            op, clone = _operation_for(graph, node, weight_params, built.quantizers, plan, wrapper, pool)
            if isinstance(clone, keras.layers.Layer):
                weights_to_load.append((clone, node))
            by_op[id(node.op)] = op
        layers[node.name] = op
        outputs = op(*resolve_refs(node.args, built.tensors), **resolve_refs(node.kwargs, built.tensors))
        built.publish(node.outputs, keras.tree.flatten(outputs), node.name)

    model_inputs = inputs[0] if len(inputs) == 1 else inputs  # a single input stays a plain tensor
    model = keras.Model(model_inputs, resolve_refs(graph.outputs, built.tensors), name=name or graph.name)
    for layer, node in weights_to_load:
        if node.layer_weights:
            layer.set_weights(node.layer_weights)
    for node_name, kernels in _kernel_params_per_layer(graph, weight_params).items():
        for kernel_name, kernel_params in kernels.items():
            layers[node_name].set_params(kernel_name, kernel_params)
    return BuiltModel(model=model, tensors=built.raw, layers=layers)


@dataclass
class _Tensors:
    """The tensors of a build so far, by graph tensor id: as consumers read them (``tensors``: through the
    tensor's fused range and activation quantizer where the grids have them) and as their producer made them
    (``raw``), with the activation quantizer each quantized tensor passes through (``quantizers``)."""

    activations: dict[int, QuantParams]  # tensor id -> the grid of its activation quantizer
    fused: dict[int, QuantParams]  # tensor id -> the grid of its fused range
    kinds: dict[int, tuple[str, str]]  # tensor id -> (producer kind, consumer kind), for fused ranges
    references: dict[int, np.ndarray]  # model input id -> calibration samples its quantizer keeps
    activation_quantizer: type[ActivationQuantizer]
    tensors: dict[int, Any] = field(default_factory=dict)
    raw: dict[int, Any] = field(default_factory=dict)
    quantizers: dict[int, ActivationQuantizer] = field(default_factory=dict)

    def publish(self, ids: list[int], values: list[Any], producer: str) -> None:
        """Record the outputs ``values`` of ``producer`` under their ``ids``, passing each through its fused
        range and activation quantizer (new layers named after ``producer``) where the grids have them."""
        for k, (tid, value) in enumerate(zip(ids, values, strict=True)):
            self.raw[tid] = value
            if tid in self.fused:
                value = FusedTensorRange.from_params(
                    self.fused[tid], *self.kinds[tid], name=f"{producer}_fused_range" if len(ids) == 1 else
                    f"{producer}_{k}_fused_range",
                )(value)  # fmt: skip
            if tid in self.activations:
                qname = quantizer_name(producer, k, len(ids))
                references = self.references.get(tid)
                self.quantizers[tid] = self.activation_quantizer.from_params(
                    self.activations[tid], qname, references
                )
                value = self.quantizers[tid](value)
            self.tensors[tid] = value


def _operation_for(
    graph: Graph, node: Node, weight_params: dict[str, dict[str, QuantParams]],
    quantizers: dict[int, ActivationQuantizer], plan: QuantizationPlan | None, wrapper: type[QuantizeWrapper],
    pool: LayerPool | None,
) -> tuple[keras.Operation, keras.Operation]:  # fmt: skip
    """``(op, clone)``: the operation the quantized model calls for ``node``'s first call, and the copy inside
    it whose weights the build loads. The copy is a pooled float clone where ``pool`` has one for a node with
    kernel grids, else a new one; a node with kernel grids gets it wrapped in ``wrapper`` (its kernels on those
    grids, its bias on the scale of the grid its input is on)."""
    taken = pool.take(graph, node) if pool is not None and node.name in weight_params else None
    clone = taken if taken is not None else clone_operation(node)
    if node.name not in weight_params:
        return clone, clone
    grids = {k: KernelGrid.of(p) for k, p in weight_params[node.name].items()}
    scale = _input_scale(node, quantizers, plan)
    op = wrapper(
        clone, kind=node.known_kind, kernel_quantizers=grids, input_scale=scale, name=f"quant_{node.name}"
    )
    return op, clone


def _input_scale(
    node: Node, quantizers: dict[int, ActivationQuantizer], plan: QuantizationPlan | None
) -> float | None:
    """The scale of the grid ``node``'s (first) input is on: its quantizer's, also through grid-preserving ops
    (a max pool, a flatten); None when the input is not quantized. An integer runtime stores the bias of the
    layer on steps of this scale times the kernel's."""
    if not node.inputs:
        return None
    tensor = inherited_from(plan.inherits if plan is not None else {}, node.inputs[0], quantizers)
    quantizer = quantizers.get(tensor)
    return None if quantizer is None else quantizer.grid()[0]


def _kernel_params_per_layer(
    graph: Graph, weight_params: dict[str, dict[str, QuantParams]]
) -> dict[str, dict[str, QuantParams]]:
    """The kernel grids of each layer, from its first call; refuses calls of one layer whose grids disagree on
    which kernels are quantized or at how many bits (one kernel cannot hold two grids)."""
    by_name = {node.name: node for node in graph.nodes}
    per_layer = {}
    for names in graph.layer_calls().values():
        nodes = [by_name[name] for name in names]
        first = nodes[0]
        grids = weight_params.get(first.name, {})
        for other in nodes[1:]:
            theirs = weight_params.get(other.name, {})
            if {k: p.n_bits for k, p in theirs.items()} != {k: p.n_bits for k, p in grids.items()}:
                raise ModelError(
                    f"Layer {type(first.op).__name__} {getattr(first.op, 'name', first.name)!r} is applied "
                    f"{len(nodes)} times (nodes {[n.name for n in nodes]}) with different kernel bits "
                    f"({_bits_text(grids)} at {first.name!r}, {_bits_text(theirs)} at {other.name!r}), but it has "
                    "one kernel: give every call of the layer the same kernel widths in the plan."
                )
        if grids:
            per_layer[first.name] = grids
    return per_layer


def _bits_text(grids: dict[str, QuantParams]) -> str:
    return ", ".join(f"{k} {p.n_bits} bits" for k, p in grids.items()) or "float"
