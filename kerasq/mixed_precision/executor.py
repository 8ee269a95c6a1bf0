"""The quantized model of a graph run node by node, without building a Keras model, so any suffix can be
recomputed: the engine under the mixed-precision sensitivity and its joint check.

The executor runs one set of unbuilt layer copies (``executor_layers``): weighted linear nodes are fed their
(fake-quantized) kernels and their biases on the int32 grid, every planned tensor is fake-quantized as its
``ActivationQuantizer`` would, so each configuration costs one pass (building a model cost 1.4 s on the
pretrained CIFAR-10 CNN, mostly its variables). ``_Executor.variants`` recomputes, for all candidates of one
unit stacked along the batch axis, only the nodes downstream of that unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasq.builder.model_builder import clone_operation
from kerasq.graph.model_graph import Graph, Node, TensorRef, resolve_refs
from kerasq.graph.weights import has_plain_weights, named_weights
from kerasq.plan import QuantizationParams, inherited_from
from kerasq.quantizers.fake_quant import fake_quant, grid_scale
from kerasq.quantizers.grid import HALF_TO_EVEN, QuantParams
from kerasq.quantizers.kernel_ops import LINEAR_OPS, weighted_forward
from kerasq.quantizers.wrapper import bias_on_grid, int8_storage_steps


def _fake_quant_value(x: Any, scale: Any, zero_point: Any, p: QuantParams, rounding: str) -> Any:
    """``fake_quant``'s value without its straight-through terms (no gradient is taken here), half the
    elementwise passes: for half-to-even rounding ``round(x / s)`` equals fake_quant's
    ``x / s + (round(x / s) - x / s)`` for every finite value, and a zero zero point is not added and taken
    off again (equal values; only the sign of a zero can differ). Other roundings go through ``fake_quant``."""
    if rounding != HALF_TO_EVEN:
        return fake_quant(x, scale, zero_point, p.qmin, p.qmax, rounding, p.n_bits)
    offset = bool(np.any(np.asarray(p.zero_point) != 0))
    q = tf.math.round(tf.math.divide(x, scale))
    q = _clip(tf.math.add(q, zero_point) if offset else q, p.qmin, p.qmax)
    return tf.math.multiply(tf.math.subtract(q, zero_point) if offset else q, scale)


def _clip(x: Any, low: float, high: float) -> Any:
    """``ops.clip(x, low, high)`` of a float32 tensor as one kernel (``ClipByValue``): equal values, one pass
    over ``x`` where ``ops.clip`` makes two (minimum, then maximum) and cost ten times as long here."""
    return tf.raw_ops.ClipByValue(t=x, clip_value_min=np.float32(low), clip_value_max=np.float32(high))


_CANDIDATE, _ACTIVATION, _KERNEL = "candidate", "activation", "kernel"  # how ``_Executor.quantize`` quantizes


def _grid_tensors(p: QuantParams, shape: tuple[int, ...], how: str) -> tuple[Any, Any, str]:
    """(scale, zero point, rounding) to quantize a tensor on ``p``, shaped ``shape`` (``p.broadcast_shape``):
    as the built model's layers do (``ActivationQuantizer``; ``QuantizeWrapper`` for a kernel, half to even),
    float32 and the scale through ``grid_scale``; or, for a candidate grid of the sensitivity, its float32
    scale as it is."""
    scale = ops.convert_to_tensor(np.asarray(p.scale, np.float32).reshape(shape))
    zero_point = ops.convert_to_tensor(np.asarray(p.zero_point, np.float32).reshape(shape))
    if how == _CANDIDATE:
        return scale, zero_point, p.rounding
    return grid_scale(scale, p.method.value), zero_point, HALF_TO_EVEN if how == _KERNEL else p.rounding


def _runs_linear(node: Node, op: Any) -> bool:
    """The node's copy ``op`` can run as ``weighted_forward`` (a linear kind with its standard weights)."""
    if node.kind not in LINEAR_OPS or not isinstance(op, keras.layers.Layer):
        return False
    return has_plain_weights(node)


def executor_layers(graph: Graph) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Fresh copies of the operations of ``graph`` for an executor, without building a model: node name ->
    its copy (a layer called by several nodes stays one copy, as in the builder), and for each node of a
    weighted linear kind (``weighted_forward``'s) its float weights by name (first call's). Those copies stay
    unbuilt, without variables: the executor feeds them their (quantized) kernels. Every other copy with
    weights is built on symbolic inputs of the node's shapes and loaded with the node's weights."""
    by_op: dict[int, Any] = {}
    weights: dict[int, dict[str, Any]] = {}  # by operation: the linear copies' float weights
    layers: dict[str, Any] = {}
    linear: dict[str, dict[str, Any]] = {}
    symbolic = {tid: keras.KerasTensor(info.shape, dtype=info.dtype) for tid, info in graph.tensors.items()}
    for node in graph.nodes:
        key = id(node.op)
        if key not in by_op:
            op = by_op[key] = clone_operation(node)
            if _runs_linear(node, op):
                weights[key] = {k: ops.convert_to_tensor(w) for k, w in named_weights(node).items()}
            elif isinstance(op, keras.layers.Layer) and node.layer_weights:
                op(*resolve_refs(node.args, symbolic), **resolve_refs(node.kwargs, symbolic))
                op.set_weights(node.layer_weights)
        layers[node.name] = by_op[key]
        if key in weights:
            linear[node.name] = weights[key]
    return layers, linear


class _Executor:
    """Runs the quantized model of ``graph`` on ``params`` node by node, so any suffix can be recomputed.

    No model is built: ``layers`` and ``linear`` are ``executor_layers``' (of ``graph`` before bias
    correction). Weighted linear nodes run through ``weighted_forward`` with their float kernels, or, where
    ``params`` has grids, their kernels fake-quantized once as ``QuantizeWrapper`` does, and their bias
    from ``graph`` (bias-corrected) on its int32 grid (steps of the input grid's scale times the kernel's,
    ``bias_on_grid``; the input grid found through ``inherits``, the plan's grid-preserving ops, as the builder
    finds it). Every planned tensor is fake-quantized as its ``ActivationQuantizer`` would. A layer called by
    several nodes has one kernel and one bias: its first call's grids and weights (the builder's).
    """

    def __init__(
        self,
        graph: Graph,
        layers: dict[str, Any],
        linear: dict[str, dict[str, Any]],
        params: QuantizationParams,
        inherits: dict[int, int] | None = None,
    ) -> None:
        self.graph, self.layers, self.linear = graph, layers, linear
        self.grids, self.inherits = params.activations, inherits or {}
        self._grid_cache: dict[
            tuple, tuple
        ] = {}  # (id of grid, shape, how) -> (grid, scale, zero point, rounding)
        self.kernels: dict[str, dict[str, Any]] = {}  # the grid's kernels, quantized once (else float)
        self.biases: dict[str, Any] = {}  # as the layer adds them (on their int32 grid when it has one)
        self.float_biases: dict[str, Any] = {}  # before that rounding (bias-corrected)
        self.input_scales: dict[str, float | None] = {}  # the scale of the grid the layer's input is on
        self.kernel_grids: dict[str, dict[str, QuantParams]] = {}
        self.raw: dict[int, Any] = {}  # kept node outputs before their quantizers (``reference``'s ``keep``)
        by_name = {node.name: node for node in graph.nodes}
        for first, calls in graph.layer_calls().items():
            if first not in linear:
                continue
            grids = params.weights.get(first, {})
            kernels = {
                k: self.quantize(w, grids[k], _KERNEL) if k in grids else w
                for k, w in linear[first].items()
                if k != "bias"
            }
            node = by_name[first]  # its bias: corrected (weights set), else the float one
            bias = linear[first].get("bias") if node.weights is None else named_weights(node).get("bias")
            scale = self._input_scale(node.inputs[0]) if node.inputs else None
            on_grid = self.bias_for(bias, scale, grids, _KERNEL)
            for name in calls:
                self.kernels[name], self.biases[name] = kernels, on_grid
                self.float_biases[name], self.input_scales[name] = bias, scale
                self.kernel_grids[name] = grids

    def _grid_source(self, tensor: int) -> int | None:
        """The tensor whose grid ``tensor`` is on (itself, or up through grid-preserving ops); None: none."""
        tensor = inherited_from(self.inherits, tensor, self.grids)
        return tensor if tensor in self.grids else None

    def _input_scale(self, tensor: int, grid: QuantParams | None = None) -> float | None:
        """The scale of ``grid`` (default: the grid ``tensor`` is on), as its ``ActivationQuantizer`` uses it."""
        if grid is None:
            source = self._grid_source(tensor)
            if source is None:
                return None
            grid = self.grids[source]
        scale = grid_scale(np.float32(np.reshape(grid.scale, -1)[0]), grid.method.value)
        return float(ops.convert_to_numpy(scale))

    def bias_for(self, bias: Any, input_scale: float | None, grids: dict[str, QuantParams], how: str) -> Any:
        """``bias`` on the int32 grid of ``input_scale`` times the kernel grid's scale (``how``: the kernel's
        quantization, ``_KERNEL`` or ``_CANDIDATE``), as ``QuantizeWrapper.quantized_bias`` adds it."""
        if bias is None or input_scale is None or list(grids) != ["kernel"]:
            return bias
        p = grids["kernel"]
        step = _grid_tensors(p, (int(np.size(p.scale)),), how)[0] / int8_storage_steps(
            p.n_bits, p.qmin, p.qmax
        )
        return bias_on_grid(ops.convert_to_tensor(bias), input_scale, step)

    def quantize(self, x: Any, p: QuantParams, how: str) -> Any:
        """``x`` fake-quantized on ``p`` (``how``: see ``_grid_tensors``; its tensors made once per grid)."""
        shape = p.broadcast_shape(tuple(x.shape))
        key = (id(p), shape, how)
        if key not in self._grid_cache:
            self._grid_cache[key] = (p, *_grid_tensors(p, shape, how))
        _, scale, zero_point, rounding = self._grid_cache[key]
        return _fake_quant_value(x, scale, zero_point, p, rounding)

    def _slices(self, x: Any, params: Sequence[QuantParams], n: int) -> Any:
        """Quantize slice k of a candidate-stacked batch with ``params[k]`` (a clean batch: each in turn)."""
        if x.shape[0] == n:
            return ops.concatenate([self.quantize(x, p, _CANDIDATE) for p in params], axis=0)
        slices = [self.quantize(x[k * n : (k + 1) * n], p, _CANDIDATE) for k, p in enumerate(params)]
        return ops.concatenate(slices, axis=0)

    def _consumed(self, tid: int, y: Any) -> Any:
        """``y`` as consumers of tensor ``tid`` read it (after its quantizer, if planned)."""
        return self.quantize(y, self.grids[tid], _ACTIVATION) if tid in self.grids else y

    def _call(self, node: Node, values: dict[int, Any]) -> list[Any]:
        def ref(v: Any) -> Any:
            return values[v.id] if isinstance(v, TensorRef) else v

        args = keras.tree.map_structure(ref, node.args)
        kwargs = keras.tree.map_structure(ref, node.kwargs)
        layer = self.layers[node.name]
        if node.name in self.kernels:  # as QuantizeWrapper.call: the first input, the (quantized) kernels
            return [
                weighted_forward(
                    node.known_kind, layer, args[0], self.kernels[node.name], self.biases[node.name]
                )
            ]
        return keras.tree.flatten(layer(*args, **kwargs))

    def _candidate_input_scales(
        self, node: Node, activation_params: Mapping[int, Sequence[QuantParams]]
    ) -> list[float | None] | None:
        """Each candidate's input scale when weighted ``node`` reads a tensor on a candidate grid; else None."""
        if node.name not in self.kernels or not node.inputs:
            return None
        tensor = inherited_from(self.inherits, node.inputs[0], activation_params)
        if tensor not in activation_params:
            return None
        return [self._input_scale(tensor, p) for p in activation_params[tensor]]

    def _call_per_input_grid(self, node: Node, x: Any, scales: list[float | None]) -> list[Any]:
        """Weighted ``node`` on a candidate-stacked input, each candidate's bias on its own input grid."""
        outs = [
            weighted_forward(
                node.known_kind,
                self.layers[node.name],
                part,
                self.kernels[node.name],
                self.bias_for(self.float_biases[node.name], scale, self.kernel_grids[node.name], _KERNEL),
            )
            for part, scale in zip(ops.split(x, len(scales), axis=0), scales, strict=True)
        ]
        return [ops.concatenate(outs, axis=0)]

    def _candidate_kernels_forward(
        self,
        node: Node,
        x: Any,
        kernel_params: Sequence[dict[str, QuantParams]],
        biases: Sequence[np.ndarray | None],
    ) -> list[Any]:
        """Weighted ``node`` (the weight unit's) on the reference input ``x`` once per candidate kernel grid,
        the outputs stacked along the batch. Each candidate's bias (its bias-corrected one where ``biases``
        has it, else the node's) is put on the int32 grid of that candidate's kernel scale."""
        layer = self.layers[node.name]
        outs = [
            weighted_forward(
                node.known_kind,
                layer,
                x,
                {k: self.quantize(self.linear[node.name][k], p, _CANDIDATE) for k, p in grid.items()},
                self.bias_for(
                    self.float_biases.get(node.name) if bias is None else bias,
                    self.input_scales.get(node.name),
                    grid,
                    _CANDIDATE,
                ),
            )
            for grid, bias in zip(kernel_params, biases or [None] * len(kernel_params), strict=True)
        ]
        return [ops.concatenate(outs, axis=0)]

    def _candidate_outputs(
        self,
        node: Node,
        values: dict[int, Any],
        dirty: dict[int, Any],
        activation_params: Mapping[int, Sequence[QuantParams]],
        n_variants: int,
        touched: bool,
    ) -> list[Any]:
        """Outputs of ``node`` (not the weight unit's node) for ``variants``: recomputed on the candidates'
        stacked inputs when it reads a changed tensor (``touched``; ``dirty`` holds the changed tensors,
        the others repeated from the reference ``values``), else the reference's own outputs, which its
        planned outputs' candidate grids then quantize."""
        local = {
            t: dirty[t] if t in dirty else ops.concatenate([values[t]] * n_variants, axis=0)
            for t in node.inputs
        }
        scales = self._candidate_input_scales(node, activation_params) if touched else None
        if scales is not None:  # a weighted layer whose input grid is the candidate's
            return self._call_per_input_grid(node, local[node.inputs[0]], scales)
        if touched:
            return self._call(node, local)
        if all(t in self.raw for t in node.outputs):  # the reference's, before its quantizers
            return [self.raw[t] for t in node.outputs]
        return self._call(node, values)

    def reference(self, inputs: list[np.ndarray], keep: frozenset[str] = frozenset()) -> dict[int, Any]:
        """Every tensor as its consumers read it (after its quantizer), for the reference model. The outputs
        of the nodes named in ``keep`` are kept before their quantizers too (``raw``), for ``variants``."""
        values: dict[int, Any] = {}
        for tid, x in zip(self.graph.inputs, inputs, strict=True):
            values[tid] = self._consumed(tid, ops.convert_to_tensor(x))
        for node in self.graph.nodes:
            for tid, y in zip(node.outputs, self._call(node, values), strict=True):
                values[tid] = self._consumed(tid, y)
                if node.name in keep:
                    self.raw[tid] = y
        return values

    def variants(
        self,
        values: dict[int, Any],
        raw_inputs: Sequence[np.ndarray],
        weight_node: str | None,
        kernel_params: Sequence[dict[str, QuantParams]],
        activation_params: Mapping[int, Sequence[QuantParams]],
        biases: Sequence[np.ndarray | None] = (),
        points: frozenset[int] = frozenset(),
        window: int | None = None,
    ) -> dict[int, Any]:
        """Tensors that change when one unit takes each of several candidates (stacked along the batch),
        computed until ``window`` of the tensors in ``points`` have changed (all, when None)."""
        dirty: dict[int, Any] = {}
        reached = 0
        n = len(raw_inputs[0])
        n_variants = len(kernel_params) or len(next(iter(activation_params.values())))
        for tid, x in zip(self.graph.inputs, raw_inputs, strict=True):
            if tid in activation_params:
                dirty[tid] = self._slices(ops.convert_to_tensor(x), activation_params[tid], n)
        for node in self.graph.nodes:
            touched = any(t in dirty for t in node.inputs)
            if (
                not touched
                and node.name != weight_node
                and not any(t in activation_params for t in node.outputs)
            ):
                continue
            if node.name == weight_node:
                results = self._candidate_kernels_forward(node, values[node.inputs[0]], kernel_params, biases)
            else:
                results = self._candidate_outputs(node, values, dirty, activation_params, n_variants, touched)
            for tid, y in zip(node.outputs, results, strict=True):
                if tid in activation_params:
                    dirty[tid] = self._slices(y, activation_params[tid], n)
                else:
                    dirty[tid] = self._consumed(tid, y)
                reached += tid in points
            if window is not None and reached >= window:
                break
        return dirty
