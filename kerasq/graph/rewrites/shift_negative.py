"""Shift-negative correction (SNC), the float-exact part: shift an activation up, fold the shift into W.

An activation ``a`` with a small negative tail (swish, gelu, elu, leaky relu, PReLU, hard swish, selu)
wastes half a signed grid. With ``a' = a + s`` (s > 0) it fits an unsigned one, and the single linear
layer L reading it absorbs the shift in its bias:

    W a + b  ==  W (a + s) + (b - s W 1),      i.e.  b' = b - s * sum(W over every non-output axis).

Conv kernels [k..., c_in/groups, f] sum over all axes but the last (a grouped conv's output channel only
sums its own group's inputs, which is the same thing); depthwise kernels [k..., c, m] sum over the spatial
axes, giving [c, m] -> c*m; dense kernels [in, out] over the input axis. The correction precedes L's own
activation, so L may have any ``activation=``.

Exactness needs L to see ``a + s`` everywhere, padding included. A "valid" conv pads nothing. For a "same"
conv, the TF "same" amounts (more after than before when odd) move into the activation node: it becomes
``ShiftedActivation`` computing ``pad(a(x)) + s`` (zero padding before the shift: every activation here
maps 0 to 0, so the border reads s, as ``a(pad(x)) + s`` would) and L becomes "valid".

Refused: conv_transpose and separable convs, "causal" padding, channels_first, shared or float-kept
nodes, activations whose output is a model output or read by anything but L, L reading other tensors,
``keras.ops.gelu(approximate=True)`` (no Keras activation name computes it). The user's layers are
untouched; choosing ``s`` is left to the caller.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import replace

import keras
import numpy as np

from kerasq.errors import ModelError
from kerasq.graph.model_graph import Graph, Node, TensorInfo, TensorRef
from kerasq.graph.weights import has_plain_weights, named_weights, weight_names
from kerasq.layers import ShiftedActivation
from kerasq.quantizers.weighted_kinds import kinds_with

SNC_KINDS = frozenset({"swish", "gelu", "elu", "leaky_relu", "prelu", "hard_swish", "selu"})
_READER_KINDS = kinds_with("shift_negative_folding")
_PARAMETRIZED_LAYERS = (keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)


def activation_spec(node: Node) -> str | dict | None:
    """``ShiftedActivation``'s ``activation`` argument computing what ``node`` computes (None: cannot)."""
    op, cls_name = node.op, type(node.op).__name__
    if type(op) is keras.layers.Activation:
        name = node.layer_config.get("activation")
        if not isinstance(name, str):
            return None
        # An unrewritten layer must really call the named Keras function (not a lookalike with its name).
        return name if node.config is not None or op.activation is keras.activations.get(name) else None
    if type(op) in _PARAMETRIZED_LAYERS:
        return keras.layers.serialize(type(op).from_config(node.layer_config))
    if isinstance(op, keras.layers.Layer):
        return None
    if cls_name in ("Silu", "HardSilu"):
        return {"Silu": "silu", "HardSilu": "hard_silu"}[cls_name]
    if cls_name == "Gelu":
        return None if getattr(op, "approximate", True) else "gelu"
    if cls_name == "Elu":
        return keras.layers.serialize(keras.layers.ELU(alpha=float(op.alpha)))
    if cls_name == "LeakyRelu":
        return keras.layers.serialize(keras.layers.LeakyReLU(negative_slope=float(op.negative_slope)))
    return None


def _refusal(act: Node, graph: Graph, consumers: dict, shared: set[int], outputs: set[int]) -> str | None:
    """Why ``act`` is not an SNC candidate (None when it is)."""
    if act.kind not in SNC_KINDS:
        return f"kind {act.kind!r} is not one of {sorted(SNC_KINDS)}"
    if act.float_reason or id(act.op) in shared:
        return "it is kept in float or shared"
    if len(act.inputs) != 1 or len(act.outputs) != 1 or act.args != (TensorRef(act.inputs[0]),) or act.kwargs:
        return "it is not a single-tensor call"
    if activation_spec(act) is None:
        return f"{type(act.op).__name__} has no ShiftedActivation equivalent"
    out_id = act.outputs[0]
    readers = consumers.get(out_id, [])
    if out_id in outputs or len(readers) != 1:
        return "its output must be read by exactly one layer and not be a model output"
    reader = readers[0]
    if reader.kind not in _READER_KINDS or reader.float_reason or id(reader.op) in shared:
        return f"its reader {reader.name!r} is not an unshared conv, depthwise conv or dense layer"
    if reader.inputs != [out_id] or len(reader.outputs) != 1:
        return f"its reader {reader.name!r} reads other tensors"
    config = reader.layer_config
    if not has_plain_weights(reader):
        return f"its reader {reader.name!r} has extra weights"
    if config.get("data_format", "channels_last") != "channels_last":
        return f"its reader {reader.name!r} is not channels_last"
    if reader.kind != "dense" and config.get("padding") not in ("same", "valid"):
        return f"its reader {reader.name!r} has padding {config.get('padding')!r}"
    spatial = graph.tensors[out_id].shape[1:-1]
    if reader.kind != "dense" and config["padding"] == "same" and any(d is None for d in spatial):
        return f"its reader {reader.name!r} pads 'same' over unknown spatial sizes {spatial}"
    return None


def snc_candidates(graph: Graph) -> list[str]:
    """Names of the activation nodes ``shift_negative`` can shift, in graph order."""
    consumers, shared, outputs = graph.consumers(), graph.shared_operations(), set(graph.output_ids())
    return [n.name for n in graph.nodes if _refusal(n, graph, consumers, shared, outputs) is None]


def same_padding(spatial: tuple[int | None, ...], kernel: tuple, strides: tuple, dilation: tuple) -> list:
    """TF "same" zero padding, one (before, after) pair per spatial axis."""
    pairs = []
    for size, k, stride, d in zip(spatial, kernel, strides, dilation, strict=True):
        if size is None:
            raise ModelError(f"'same' padding over an unknown spatial size {spatial} cannot be moved")
        total = max((math.ceil(size / stride) - 1) * stride + (k - 1) * d + 1 - size, 0)
        pairs.append((total // 2, total - total // 2))
    return pairs


def _as_tuple(value: int | tuple, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value),) * rank


def _corrected_reader(reader: Node, shift: float, padded: bool) -> Node:
    """``reader`` with bias ``b - shift * sum(W)`` (and "valid" padding when its padding moved away)."""
    weights = named_weights(reader)
    kernel = np.asarray(weights["kernel"], dtype=np.float64)
    if reader.kind == "depthwise_conv":
        column_sums = kernel.sum(axis=tuple(range(kernel.ndim - 2))).reshape(-1)
    else:
        column_sums = kernel.sum(axis=tuple(range(kernel.ndim - 1)))
    bias = weights.get("bias")
    dtype = bias.dtype if bias is not None else weights["kernel"].dtype
    old = np.zeros_like(column_sums) if bias is None else np.asarray(bias, dtype=np.float64)
    weights["bias"] = (old - shift * column_sums).astype(dtype)
    config = {**reader.layer_config, "use_bias": True}
    if padded:
        config["padding"] = "valid"
    return replace(reader, config=config, weights=[weights[n] for n in weight_names(reader.known_kind, True)])


def shift_negative(graph: Graph, shifts: Mapping[str, float]) -> Graph:
    """Shift each named activation up by its shift and fold the shift into its reader's bias."""
    if not shifts:
        return graph
    consumers, shared, outputs = graph.consumers(), graph.shared_operations(), set(graph.output_ids())
    by_name = {n.name: n for n in graph.nodes}
    for name, shift in shifts.items():
        if name not in by_name:
            raise ValueError(f"shift_negative: no node named {name!r} in graph {graph.name!r}")
        reason = _refusal(by_name[name], graph, consumers, shared, outputs)
        if reason is not None:
            raise ValueError(f"shift_negative: node {name!r} is not an SNC candidate: {reason}")
        if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not (0 < shift < math.inf):
            raise ValueError(f"shift_negative: node {name!r} needs a finite shift > 0; got {shift!r}")
    current: dict[str, Node] = {}
    tensors = dict(graph.tensors)
    for name, shift in shifts.items():
        act = by_name[name]
        out_id = act.outputs[0]
        reader = consumers[out_id][0]
        info = graph.tensors[out_id]
        config = reader.layer_config
        padding = None
        if reader.kind != "dense" and config["padding"] == "same":
            rank = len(info.shape) - 2
            padding = same_padding(info.shape[1:-1], _as_tuple(config["kernel_size"], rank),
                                   _as_tuple(config["strides"], rank), _as_tuple(config["dilation_rate"], rank))  # fmt: skip
        spec = activation_spec(act)
        assert spec is not None, "_refusal accepts only activations activation_spec can express"
        op = ShiftedActivation(spec, float(shift), padding, name=act.name)
        current[name] = replace(
            act, op=op, config=op.get_config(), weights=[np.asarray(w) for w in act.layer_weights]
        )
        current[reader.name] = _corrected_reader(reader, float(shift), padding is not None)
        tensors[out_id] = TensorInfo(shape=op.compute_output_shape(info.shape), dtype=info.dtype)
    return replace(graph, nodes=[current.get(n.name, n) for n in graph.nodes], tensors=tensors)
