"""Decide, before any data is seen, what gets quantized: kernels per weighted node, activation tensors.

The result (a ``QuantizationPlan``) is what statistics collection, parameter search, mixed precision and
the model builder all read.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kerasq.config.config import QuantizationConfig
from kerasq.errors import ModelError
from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.op_kinds import is_weighted
from kerasq.graph.weights import QUANTIZED_KERNELS, channel_axes, named_weights
from kerasq.plan import (
    SEARCHED,
    ActivationSpec,
    FixedGrid,
    GridSource,
    QuantizationPlan,
    SharedGrid,
    WeightSpec,
    grid_source,
    range_is_fixed,
)
from kerasq.platform.capabilities import OpQuantizationConfig, TargetPlatformCapabilities
from kerasq.quantizers.grid import HALF_AWAY_FROM_STORED_ZERO


def _with_overrides(cfg: OpQuantizationConfig, qc: QuantizationConfig) -> OpQuantizationConfig:
    changes: dict = {}
    if qc.weights_n_bits is not None:
        changes["weights_n_bits"] = qc.weights_n_bits
    if qc.activation_n_bits is not None:
        changes["activation_n_bits"] = qc.activation_n_bits
    if qc.weights_per_channel is not None:
        changes["weights_per_channel"] = qc.weights_per_channel
    return replace(cfg, **changes) if changes else cfg


def _fused_pairs(tpc: TargetPlatformCapabilities) -> set[tuple[str, str]]:
    return {pair for pattern in tpc.fusing_patterns for pair in zip(pattern, pattern[1:], strict=False)}


def _is_fused(
    node: Node, tensor: int, graph: Graph, consumers: dict, tpc: TargetPlatformCapabilities
) -> bool:
    """The tensor is internal to a fused chain: one consumer, same fusing pattern, not a model output."""
    readers = consumers.get(tensor, [])
    if len(readers) != 1 or tensor in graph.output_ids() or readers[0].float_reason:
        return False
    src, dst = tpc.operator_set_of(node.kind), tpc.operator_set_of(readers[0].kind)
    return src is not None and dst is not None and (src.name, dst.name) in _fused_pairs(tpc)


def _weight_specs(node: Node, cfg: OpQuantizationConfig) -> dict[str, WeightSpec]:
    kernels = named_weights(node)
    for name, values in kernels.items():
        if not np.all(np.isfinite(values)):
            raise ModelError(
                f"Layer {node.name!r}: its {name!r} weights contain NaN/Inf values (after folding any batch norm "
                "into it); fix the float model (retrain it, or load the intended weights) before quantizing."
            )
    specs = {}
    for kernel_name, axes in QUANTIZED_KERNELS[node.known_kind].items():
        kernel_axes = channel_axes(kernels[kernel_name], axes) if cfg.weights_per_channel else ()
        specs[kernel_name] = WeightSpec(
            node=node.name, kernel=kernel_name, n_bits=cfg.weights_n_bits, method=cfg.weights_method,
            axes=kernel_axes, narrow_range=cfg.weights_narrow_range, bit_candidates=cfg.weights_candidates,
        )  # fmt: skip
    return specs


def _activation_spec(tensor: int, producer: str, cfg: OpQuantizationConfig) -> ActivationSpec:
    return ActivationSpec(
        tensor=tensor, producer=producer, n_bits=cfg.activation_n_bits, method=cfg.activation_method,
        signedness=cfg.signedness, bit_candidates=cfg.activation_candidates, grid=_platform_grid(cfg),
    )  # fmt: skip


def _platform_grid(cfg: OpQuantizationConfig) -> GridSource:
    if cfg.fixed_output_range is None:
        return SEARCHED
    lo, hi = cfg.fixed_output_range
    return FixedGrid(lo=lo, hi=hi, imposed_by="platform")


def _is_float_tensor(graph: Graph, tensor: int) -> bool:
    return graph.tensors[tensor].dtype.startswith(("float", "bfloat"))


def assign_quantization(
    graph: Graph, tpc: TargetPlatformCapabilities, quantization_config: QuantizationConfig
) -> QuantizationPlan:
    """Apply the platform's rules (and the user's overrides) to every node of ``graph``."""
    plan = QuantizationPlan()
    consumers, producers = graph.consumers(), graph.producers()
    for tensor, name in zip(graph.inputs, graph.input_names, strict=True):
        cfg = _with_overrides(tpc.default_config, quantization_config)
        if cfg.enable_activation_quantization and _is_float_tensor(graph, tensor):
            plan.activations[tensor] = _activation_spec(tensor, name, cfg)
    for node in graph.nodes:
        if node.kind is None:
            plan.float_nodes[node.name] = node.float_reason or (
                f"{type(node.op).__name__} is not an operation kerasq knows how to quantize; kept in float"
            )
            continue
        cfg = _with_overrides(tpc.config_for(node.kind), quantization_config)
        if is_weighted(node.kind) and cfg.enable_weights_quantization:
            plan.weights[node.name] = _weight_specs(node, cfg)
        if cfg.quantization_preserving:
            float_inputs = [t for t in node.inputs if _is_float_tensor(graph, t)]
            for tensor in node.outputs:
                if float_inputs and _is_float_tensor(graph, tensor):
                    plan.inherits[tensor] = float_inputs[0]
                    if cfg.output_on_input_grid:
                        _round_onto_input_grid(plan, float_inputs[0], tensor, node.name, producers)
            continue
        if not cfg.enable_activation_quantization:
            continue
        for tensor in node.outputs:
            if not _is_float_tensor(graph, tensor):
                continue
            if _is_fused(node, tensor, graph, consumers, tpc):
                plan.fused.add(tensor)
            else:
                plan.activations[tensor] = _activation_spec(tensor, node.name, cfg)
        unify = cfg.inputs_share_output_grid or (
            node.kind == "concat" and quantization_config.concat_threshold_update
        )
        if unify and node.outputs[0] in plan.activations:
            _share_input_grids(node, plan, consumers, every_input=cfg.inputs_share_output_grid)
    return plan


def _round_onto_input_grid(
    plan: QuantizationPlan, source: int, tensor: int, name: str, producers: dict[int, Node]
) -> None:
    """``tensor`` (computed by node ``name`` from ``source``) is quantized on ``source``'s grid, as a device that
    keeps the input scale but rounds (TFLite's average pooling). An input that only inherits its grid through
    preserving ops (a max-pool's output) gets an explicit quantizer on that grid too: it changes no value, and
    without it the TFLite converter leaves the branch into the pooling float."""
    root = grid_source(plan, source)
    if root is None:
        return
    spec = replace(plan.activations[root], grid=SharedGrid(owner=root))  # grid_source names a grid owner
    if source not in plan.activations:
        producer = producers[source].name if source in producers else spec.producer
        plan.activations[source] = replace(spec, tensor=source, producer=producer)
    # TFLite rounds the integer means half away from the stored zero (int8 0), not to even: on the Keras side
    # that rule matters, since a 2x2 mean is a tie a quarter of the time
    plan.activations[tensor] = replace(
        spec, tensor=tensor, producer=name, rounding=HALF_AWAY_FROM_STORED_ZERO
    )


def _share_input_grids(node: Node, plan: QuantizationPlan, consumers: dict, every_input: bool) -> None:
    """``node``'s inputs are quantized on its output grid (one rounding, as on device): every input when the
    platform requires one grid (``every_input``: TFLite's converter gives a concatenation and all its operands
    one scale, also when an operand is read elsewhere, as in DenseNet), else the inputs only ``node`` reads."""
    out = node.outputs[0]
    for tensor in dict.fromkeys(node.inputs):
        spec = plan.activations.get(tensor)
        if spec is None or range_is_fixed(plan, spec):
            continue
        if every_input or len(consumers.get(tensor, [])) == 1:
            _join_grid(plan, tensor, out)


def _owner(plan: QuantizationPlan, tensor: int) -> int:
    shared = plan.activations[tensor].shared_owner
    return tensor if shared is None else shared


def _join_grid(plan: QuantizationPlan, tensor: int, owner: int) -> None:
    """``tensor``'s grid group (its owner and every tensor on that grid) takes ``owner``'s grid.
    A ``SharedGrid`` always names a tensor with a grid of its own: a concatenation feeding another one
    (Inception, DenseNet) hands its whole group on to the outer grid instead of leaving it pointing at a
    tensor that no longer owns one."""
    old, new = _owner(plan, tensor), _owner(plan, owner)
    if old == new:
        return
    for tid, spec in list(plan.activations.items()):
        if tid == old or spec.shared_owner == old:
            plan.activations[tid] = replace(spec, grid=SharedGrid(owner=new))
