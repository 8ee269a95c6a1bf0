"""Sensitivity of each configurable unit to each of its bit-width candidates.

Reference: the quantized model with every unit at its highest candidate. For unit ``u`` at candidate ``c``
only ``u`` changes, so only the nodes downstream of ``u`` are recomputed, from cached reference tensors; all
candidates of a unit run together, stacked along the batch axis. The distance at an interest point (every
quantized activation and every model output) is the normalized MSE against the float model,
``mean_n ||q_n - f_n||^2 / ||f_n||^2``; interest points upstream of ``u`` keep their reference distance.
``sensitivity[u][c]`` is the weighted distance at candidate ``c`` minus the weighted distance of the reference
(so candidate 0 scores 0).

No Keras model is built: the float values, the reference, the variants and the joint check run one set of
unbuilt layer copies node by node (``executor_layers``, ``_Executor``), weighted nodes fed their kernels, so each
configuration costs one pass (building a model cost 1.4 s on the pretrained CIFAR-10 CNN, mostly its variables).
The grids of every candidate are searched beforehand (``search_candidate_grids``, timed as ``grids``).

Linear time: a unit's variants are recomputed until ``WINDOW`` interest points have changed; every later point
the unit reaches takes the distance increase of the last point measured (relative error carried on). On a
trained 9-layer CIFAR-10 CNN the rank correlation of AVG sensitivities with the measured output damage was
0.913 with every point recomputed and with windows of 8, 6 and 4 (0.909 with 2). Recomputing every downstream
point cost 0.06 s per layer on a 10-conv chain and 0.22 s on a 150-conv chain; with the window, 0.05 on both.

Interest-point weights (``MpDistanceWeighting``): AVG uniform; LAST_LAYER model outputs only; EXP
``exp(-(1 - depth) / sigma)``; HESSIAN ``trace_i * E[f_i^2]``, the Hessian-trace estimate of how much output
error a unit of normalized error at point ``i`` causes (``trace(J^T J) / n`` per element times the element
energy ``n * E[f^2]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kerasq.builder.model_builder import build_model, clone_operation
from kerasq.config.config import MixedPrecisionQuantizationConfig
from kerasq.config.enums import MpDistanceWeighting
from kerasq.corrections.bias_correction import correct_biases
from kerasq.graph.model_graph import Graph, Node, TensorRef, resolve_refs
from kerasq.graph.weights import named_weights, weight_names
from kerasq.hessian import activation_hessian_scores
from kerasq.mixed_precision.units import Unit, apply_bits, unit_tensors
from kerasq.params.grid_cache import GridCache
from kerasq.plan import QuantizationParams, QuantizationPlan, inherited_from
from kerasq.progress import progress
from kerasq.quantizers.fake_quant import fake_quant, grid_scale
from kerasq.quantizers.grid import HALF_TO_EVEN, QuantParams
from kerasq.quantizers.kernel_ops import LINEAR_OPS, weighted_forward
from kerasq.quantizers.wrapper import bias_on_grid, int8_storage_steps

_EPS = 1e-12
THREADS = 2  # units measured at once: TensorFlow runs eager ops without the GIL
WINDOW = 8  # interest points recomputed downstream of a unit; beyond, its distance increase persists


@dataclass(kw_only=True)
class Sensitivity:
    """Per unit, per candidate: increase of the weighted distance over the reference (candidate 0 = 0).

    Keyword-only: ``input_means`` must reach the joint check, or it compares candidates without the bias
    correction the final model has."""

    values: list[np.ndarray]
    interest_points: list[str]
    point_weights: np.ndarray
    reference_distance: float
    seconds: float
    tensors: list[int] = field(default_factory=list)  # interest-point tensor ids
    floats: list[np.ndarray] = field(default_factory=list)  # float activations there, on the samples
    samples: list[np.ndarray] = field(default_factory=list)
    input_means: dict[str, np.ndarray] = field(default_factory=dict)
    increases: list[np.ndarray] = field(
        default_factory=list
    )  # per unit: (candidates, points) distance increase

    layers: tuple[dict[str, Any], dict[str, dict[str, Any]]] = ({}, {})  # ``executor_layers``
    corrector: _BiasCorrector | None = None  # the corrected nodes so far

    def joint_distance(
        self,
        graph: Graph,
        plan: QuantizationPlan,
        grids: GridCache,
        kernels: dict[str, np.ndarray] | None = None,
    ) -> float:
        """Distance to float at the model outputs (normalized MSE, averaged over outputs) of a whole
        configuration, every unit at its planned width and biases corrected as in the final model: one full
        pass. Measured at the outputs whatever the sensitivity weighting, as it ranks complete models: on the
        test CNN, AVG-weighted distances of uniform 4-bit and a mixed solution of its size tied (0.0276 and
        0.0274) while their outputs were 0.045 and 0.094 from float (top-1 43.9% and 39.8%).

        The pass is the executor's (``executor_layers``, the configuration's grids): the model PTQ would
        build for ``plan``, computed without building it. ``kernels``: node -> the kernel PTQ gives it where
        that is not the nearest rounding (``KernelCompensation.kernels`` of the configuration's grids)."""
        params = grids.params_for(plan)
        layers, linear = self.layers
        if (
            kernels
        ):  # as ``pipeline.corrected`` makes the graph: biases correct the compensated kernels' errors
            corrected = correct_biases(graph, params, self.input_means, kernels)
            linear = {
                name: {**w, "kernel": ops.convert_to_tensor(kernels[name])} if name in kernels else w
                for name, w in linear.items()
            }
        else:
            corrector = self.corrector
            if corrector is None or corrector.graph is not graph:
                corrector = _BiasCorrector(graph, self.input_means)
            corrected = corrector.corrected(params)
        values = _Executor(corrected, layers, linear, params, plan.inherits).reference(self.samples)
        outputs = set(graph.output_ids())
        d = [
            _nmse(values[t], f, 1)[0] for t, f in zip(self.tensors, self.floats, strict=True) if t in outputs
        ]
        return float(np.mean(d))


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
    use_bias = bool(node.layer_config.get("use_bias", False))
    return len(node.layer_weights) == len(weight_names(node.kind, use_bias))


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
                weighted_forward(node.kind, layer, args[0], self.kernels[node.name], self.biases[node.name])
            ]
        return keras.tree.flatten(layer(*args, **kwargs))

    def _candidate_input_scales(
        self, node: Node, activation_params: dict[int, Sequence[QuantParams]]
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
                node.kind,
                self.layers[node.name],
                part,
                self.kernels[node.name],
                self.bias_for(self.float_biases[node.name], scale, self.kernel_grids[node.name], _KERNEL),
            )
            for part, scale in zip(ops.split(x, len(scales), axis=0), scales, strict=True)
        ]
        return [ops.concatenate(outs, axis=0)]

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
        activation_params: dict[int, Sequence[QuantParams]],
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
                layer = self.layers[node.name]
                x = values[node.inputs[0]]
                outs = [
                    weighted_forward(
                        node.kind,
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
                results = [ops.concatenate(outs, axis=0)]
            else:
                local = {
                    t: dirty[t] if t in dirty else ops.concatenate([values[t]] * n_variants, axis=0)
                    for t in node.inputs
                }
                scales = self._candidate_input_scales(node, activation_params) if touched else None
                if scales is not None:  # a weighted layer whose input grid is the candidate's
                    results = self._call_per_input_grid(node, local[node.inputs[0]], scales)
                elif touched:
                    results = self._call(node, local)
                elif all(t in self.raw for t in node.outputs):  # the reference's, before its quantizers
                    results = [self.raw[t] for t in node.outputs]
                else:
                    results = self._call(node, values)
            for tid, y in zip(node.outputs, results, strict=True):
                if tid in activation_params:
                    dirty[tid] = self._slices(y, activation_params[tid], n)
                else:
                    dirty[tid] = self._consumed(tid, y)
                reached += tid in points
            if window is not None and reached >= window:
                break
        return dirty


class _BiasCorrector:
    """``correct_biases`` of ``graph`` node by node, each (node, kernel grids) corrected once: the sensitivity's
    candidates and the joint check's configurations share most of them. Same nodes as ``correct_biases``,
    which corrects every node on its own grids and mean input."""

    def __init__(self, graph: Graph, input_means: dict[str, np.ndarray]) -> None:
        self.graph, self.input_means = graph, input_means
        self._nodes: dict[tuple, tuple[Node, dict[str, QuantParams]]] = {}

    def node(self, node: Node, kernels: dict[str, QuantParams]) -> Node:
        key = (node.name, tuple((k, id(p)) for k, p in kernels.items()))
        if key not in self._nodes:
            one = QuantizationParams({}, {node.name: kernels})
            self._nodes[key] = (
                correct_biases(self.graph.with_nodes([node]), one, self.input_means).nodes[0],
                kernels,
            )
        return self._nodes[key][0]

    def corrected(self, params: QuantizationParams) -> Graph:
        """``correct_biases(graph, params, input_means)``."""
        nodes = [
            self.node(n, params.weights[n.name]) if n.name in params.weights else n for n in self.graph.nodes
        ]
        return self.graph.with_nodes(nodes)

    def bias(self, name: str, kernels: dict[str, QuantParams]) -> np.ndarray | None:
        """The node's bias after bias correction for ``kernels`` (None: the node is not corrected)."""
        if name not in self.input_means:
            return None
        bias = named_weights(self.node(self.graph.node(name), kernels)).get("bias")
        return None if bias is None else np.asarray(bias, np.float32)


def _reachable_points(graph: Graph, points: Sequence[int]) -> dict[int, int]:
    """Tensor -> bitmask of the interest points (indices into ``points``) it reaches, itself included."""
    bit = {t: 1 << i for i, t in enumerate(points)}
    consumers = graph.consumers()
    below: dict[str, int] = {}  # node -> the points its outputs reach

    def reach_of(t: int) -> int:
        mask = bit.get(t, 0)
        for node in consumers.get(t, []):
            mask |= below[node.name]
        return mask

    reach: dict[int, int] = {}
    for node in reversed(graph.nodes):  # consumers before producers
        below[node.name] = 0
        for t in node.outputs:
            reach[t] = reach_of(t)
            below[node.name] |= reach[t]
    for t in graph.inputs:
        reach[t] = reach_of(t)
    return reach


def interest_points(graph: Graph, plan: QuantizationPlan) -> list[tuple[int, str]]:
    """(tensor, label) of every quantized node output and every model output, in graph order."""
    outputs = set(graph.output_ids())
    points = []
    for node in graph.nodes:
        for tid in node.outputs:
            if tid in plan.activations or tid in outputs:
                points.append((tid, node.name))
    return points


def _energy(f: np.ndarray) -> np.ndarray:
    """``||f_n||^2`` per sample of the float batch ``f`` (shape (1, samples))."""
    return np.sum(f.reshape(1, f.shape[0], -1) ** 2, axis=2)


def _nmse(q: Any, f: np.ndarray, variants: int, energy: np.ndarray | None = None) -> np.ndarray:
    """Normalized MSE per variant: ``q`` holds ``variants`` stacked copies of the batch ``f`` (``energy``:
    ``_energy(f)``, computed once per point). In place on one float64 copy of ``q``."""
    d = np.array(q, np.float64).reshape(variants, f.shape[0], -1)
    d -= f.reshape(1, f.shape[0], -1)
    d *= d
    energy = _energy(f) if energy is None else energy
    return (np.sum(d, axis=2) / (energy + _EPS)).mean(axis=1)


def point_weights(
    method: MpDistanceWeighting,
    labels: list[str],
    is_output: np.ndarray,
    sigma: float,
    hessian: np.ndarray | None = None,
) -> np.ndarray:
    n = len(labels)
    if method is MpDistanceWeighting.LAST_LAYER:
        w = is_output.astype(np.float64)
    elif method is MpDistanceWeighting.EXP:
        depth = np.arange(n) / max(n - 1, 1)
        w = np.exp(-(1.0 - depth) / sigma)
    elif method is MpDistanceWeighting.HESSIAN:
        w = np.asarray(hessian, np.float64)
    else:
        w = np.ones(n)
    return w / max(w.sum(), _EPS)


def search_candidate_grids(plan: QuantizationPlan, units: Sequence[Unit], grids: GridCache) -> None:
    """Search, into ``grids``, every grid the sensitivity and the joint check read: the plan's at its widths
    and each unit's at each of its candidates (every call of a weight unit's layer, whose nodes have grids of
    their own). Done before the sensitivity is measured so its time holds no grid search (MCT likewise
    computes every candidate's grids before its ``search_bit_width``)."""
    grids.params_for(plan)
    for unit in units:
        for n_bits in unit.candidates:
            if unit.kind == "weights":
                for node in unit.nodes:
                    for spec in plan.weights[node].values():
                        grids.weight(spec, n_bits)
            else:
                grids.activation(plan.activations[unit.tensor], n_bits)


def compute_sensitivity(
    graph: Graph,
    plan: QuantizationPlan,
    units: Sequence[Unit],
    grids: GridCache,
    samples: list[np.ndarray],
    config: MixedPrecisionQuantizationConfig,
    input_means: dict[str, np.ndarray] | None = None,
) -> Sensitivity:
    """Sensitivity of every unit's candidates on ``samples`` (one array per model input).

    ``input_means`` (node -> its input averaged over samples) turns on bias correction, as the final model has.
    """
    start = time.perf_counter()
    input_means = input_means or {}
    reference_plan = apply_bits(plan, units, [u.candidates[0] for u in units])
    reference_params = grids.params_for(reference_plan)
    layers = executor_layers(graph)
    corrector = _BiasCorrector(graph, input_means)
    executor = _Executor(
        corrector.corrected(reference_params), *layers, reference_params, reference_plan.inherits
    )
    points = interest_points(graph, plan)
    float_values = _Executor(graph, *layers, QuantizationParams({}, {})).reference(samples)
    floats = [np.asarray(float_values[t], np.float64) for t, _ in points]
    labels = [label for _, label in points]
    is_output = np.array([t in set(graph.output_ids()) for t, _ in points])
    hessian = None
    if config.distance_weighting_method is MpDistanceWeighting.HESSIAN:
        float_built = build_model(graph)
        hessian_probe = keras.Model(
            float_built.model.inputs,
            [float_built.tensors[t] for t, _ in points] + keras.tree.flatten(float_built.model.outputs),
        )
        traces = activation_hessian_scores(hessian_probe, len(points), [samples], granularity="tensor")
        hessian = np.array([float(t) * np.mean(f**2) for t, f in zip(traces, floats, strict=True)])
    weights = point_weights(
        config.distance_weighting_method, labels, is_output, config.exp_distance_weighting_sigma, hessian
    )
    producers = graph.producers()
    requantized = frozenset(  # nodes whose outputs activation units quantize on their candidates
        producers[t].name
        for unit in units
        if unit.kind == "activation"
        for t in unit_tensors(reference_plan, unit)
        if t in producers
    )
    values = executor.reference(samples, requantized)
    energies = [_energy(f) for f in floats]
    ref_d = np.array(
        [_nmse(values[t], f, 1, e)[0] for (t, _), f, e in zip(points, floats, energies, strict=True)]
    )
    reference = float(weights @ ref_d)
    reach = _reachable_points(graph, [t for t, _ in points])
    point_set = frozenset(t for t, _ in points)

    def measure(unit: Unit) -> tuple[np.ndarray, np.ndarray]:
        """(sensitivity per candidate, distance increase per candidate and point) of one unit."""
        others = unit.candidates[1:]
        if not others:
            return np.zeros(1), np.zeros((1, len(points)))
        if unit.kind == "weights":
            specs = reference_plan.weights[unit.node]
            kernels = [{k: grids.weight(s, b) for k, s in specs.items()} for b in others]
            biases = [corrector.bias(unit.node, k) for k in kernels]
            dirty = executor.variants(values, samples, unit.node, kernels, {}, biases, point_set, WINDOW)
            sources = graph.node(unit.node).outputs
        else:
            acts = {
                t: [grids.activation(reference_plan.activations[unit.tensor], b) for b in others]
                for t in unit_tensors(reference_plan, unit)
            }
            dirty = executor.variants(values, samples, None, [], acts, (), point_set, WINDOW)
            sources = list(acts)
        downstream = 0
        for t in sources:
            downstream |= reach[t]
        d = np.repeat(ref_d[None, :], len(others), axis=0)
        increase = None  # at the last interest point measured
        for i, ((t, _), f) in enumerate(zip(points, floats, strict=True)):
            if t in dirty:
                d[:, i] = _nmse(dirty[t], f, len(others), energies[i])
                increase = d[:, i] - ref_d[i]
            elif increase is not None and downstream >> i & 1:  # beyond the window
                d[:, i] = ref_d[i] + increase
        return (
            np.concatenate([[0.0], d @ weights - reference]),
            np.concatenate([np.zeros((1, len(points))), d - ref_d], axis=0),
        )

    with ThreadPoolExecutor(THREADS) as pool:  # units in order, each measured on its own
        measured = list(
            progress(pool.map(measure, units), "kerasq: mixed-precision sensitivity", len(units), "layer")
        )
    result = [m[0] for m in measured]
    increases = [m[1] for m in measured]
    return Sensitivity(
        values=result,
        interest_points=labels,
        point_weights=weights,
        reference_distance=reference,
        seconds=time.perf_counter() - start,
        tensors=[t for t, _ in points],
        floats=floats,
        samples=samples,
        input_means=input_means,  # the joint check corrects biases as the final model does
        increases=increases,
        layers=layers,
        corrector=corrector,
    )
