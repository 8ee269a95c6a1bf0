"""Post-training quantization of a Keras 3 model, top to bottom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kerasq.builder import build_model
from kerasq.core.config import CoreConfig, QuantizationConfig
from kerasq.core.enums import QuantizationErrorMethod
from kerasq.core.resource_utilization import ResourceUtilization
from kerasq.corrections.bias_correction import CORRECTED_KINDS, add_zero_biases, correct_biases
from kerasq.corrections.concat_report import concat_range_warnings
from kerasq.corrections.shift_negative import apply_shift_negative
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.graph import read_model
from kerasq.graph.model_graph import Graph
from kerasq.graph.rewrites import (
    bound_relu_to_power_of_2,
    collapse_linear,
    collapse_residual,
    fold_batch_norms,
    lower_affines,
    split_activations,
    split_separable_convs,
)
from kerasq.info import QuantizationInfo, build_info
from kerasq.mixed_precision.bit_allocation import MixedPrecisionReport, allocate_bits
from kerasq.mixed_precision.resources import resource_utilization
from kerasq.params.hmse import kernel_importance
from kerasq.params.selection import GridCache, QuantizationParams
from kerasq.platform import TargetPlatformCapabilities, get_target_platform_capabilities
from kerasq.platform.assign import QuantizationPlan, assign_quantization
from kerasq.platform.manual_bits import pin_bit_widths
from kerasq.statistics import TensorStats, collect_statistics
from kerasq.statistics.channel_means import collect_mean_maps


@dataclass
class Prepared:
    """The pipeline's state once statistics are in: everything bit-width choices need."""

    model: keras.Model
    graph: Graph
    plan: QuantizationPlan
    data: RepresentativeData
    grids: GridCache
    core_config: CoreConfig
    tpc: TargetPlatformCapabilities
    input_means: dict[str, np.ndarray]  # weighted node -> its input averaged over samples (bias correction)
    warnings: list[str]  # findings users should act on (e.g. concat inputs with very different ranges)


def keras_post_training_quantization(
    model: keras.Model,
    representative_data_gen: Any,
    target_resource_utilization: ResourceUtilization | None = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """Quantize ``model`` with statistics from ``representative_data_gen``; the float model is not modified.

    Args:
        model: a Keras 3 Functional or Sequential model (nested sub-models are flattened).
        representative_data_gen: calibration data: a zero-argument callable yielding batches (each a list
            with one array per model input), a ``tf.data.Dataset``, or numpy array(s).
        target_resource_utilization: a ``ResourceUtilization`` budget; when given, mixed precision picks each
            configurable layer's bit width (``core_config.mixed_precision_config`` tunes how).
        core_config: ``CoreConfig(quantization_config, mixed_precision_config, bit_width_config)``.
        target_platform_capabilities: device rules; defaults to ``get_target_platform_capabilities("imx500")``.

    Returns:
        ``(quantized_model, QuantizationInfo)``.
    """
    prepared = prepare(model, representative_data_gen, core_config, target_platform_capabilities)
    plan, mixed = prepared.plan, None
    mp_config = prepared.core_config.mixed_precision_config
    if target_resource_utilization is not None or mp_config.configuration_overwrite is not None:
        plan, mixed = allocate_bits(prepared, target_resource_utilization)
    return finish(prepared, plan, mixed)


def prepare(
    model: keras.Model,
    representative_data_gen: Any,
    core_config: CoreConfig | None,
    tpc: TargetPlatformCapabilities | None,
) -> Prepared:
    """read → rewrites → plan (platform + manual bits) → statistics → shift-negative correction → input means
    (bias correction) → Hessian scores (HMSE) → grid cache."""
    core_config, tpc = _resolve(core_config, tpc)
    qc = core_config.quantization_config
    graph, plan = plan_model(model, None, core_config, tpc)
    data = RepresentativeData(representative_data_gen, input_specs_from_model(model))
    stats = _observe(graph, plan, data, qc.num_histogram_bins)
    graph, plan, warnings = apply_shift_negative(graph, plan, stats, qc, tpc)
    input_means = _input_means(graph, plan, data) if qc.weights_bias_correction else {}
    importance = None
    if qc.weights_error_method is QuantizationErrorMethod.HMSE:
        importance = kernel_importance(
            graph, plan, data.take(core_config.mixed_precision_config.num_of_images)
        )
    grids = GridCache(graph, stats, qc, importance)
    warnings += concat_range_warnings(graph, stats)
    return Prepared(model, graph, plan, data, grids, core_config, tpc, input_means, warnings)


def finish(
    prepared: Prepared, plan: QuantizationPlan, mixed: MixedPrecisionReport | None = None
) -> tuple[keras.Model, QuantizationInfo]:
    """Grids at the plan's widths → bias correction → quantized model → report."""
    graph, params = corrected(prepared, plan)
    return assemble(prepared, graph, plan, params, mixed)


def corrected(prepared: Prepared, plan: QuantizationPlan) -> tuple[Graph, QuantizationParams]:
    """The grids at the plan's widths, and the graph with biases corrected for those grids."""
    params = prepared.grids.params_for(plan)
    return correct_biases(prepared.graph, params, prepared.input_means), params


def assemble(
    prepared: Prepared,
    graph: Graph,
    plan: QuantizationPlan,
    params: QuantizationParams,
    mixed: MixedPrecisionReport | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """The quantized model of ``graph`` on ``params``, and its report."""
    name = f"{prepared.model.name}_quantized"
    quantized = build_model(
        graph, plan, params, name=name, reference_inputs=_reference_inputs(prepared)
    ).model
    info = build_info(
        graph, plan, params, prepared.tpc.name, _float_bytes(prepared.model),
        resource_utilization(graph, plan), mixed, prepared.warnings,
    )  # fmt: skip
    return quantized, info


REFERENCE_SAMPLES = 4  # calibration samples a quantized model keeps for the export self-check
_REFERENCE_ELEMENTS = 2**19  # at most 2 MiB of float32 per model input (fewer samples for large inputs)


def _reference_inputs(prepared: Prepared) -> dict[int, np.ndarray]:
    """Model input id -> the first few calibration samples (of the first batch, so they share a shape)."""
    batch = prepared.data.first_batch()
    references = {}
    for tid, array in zip(prepared.graph.inputs, batch, strict=True):
        per_sample = max(1, int(np.prod(array.shape[1:])))
        count = max(1, min(REFERENCE_SAMPLES, _REFERENCE_ELEMENTS // per_sample, len(array)))
        if np.issubdtype(array.dtype, np.floating):
            references[tid] = np.asarray(array[:count], np.float32)
    return references


def plan_model(
    model: keras.Model,
    representative_data_gen: Any,
    core_config: CoreConfig | None,
    tpc: TargetPlatformCapabilities | None,
) -> tuple[Graph, QuantizationPlan]:
    """The folded graph and its quantization plan at the platform's (and manual) bit widths."""
    core_config, tpc = _resolve(core_config, tpc)
    graph = read_model(model)
    if representative_data_gen is not None:  # validated against the model's inputs
        RepresentativeData(representative_data_gen, input_specs_from_model(model))
    graph = rewrite_graph(graph, core_config.quantization_config)
    plan = assign_quantization(graph, tpc, core_config.quantization_config)
    if core_config.quantization_config.weights_bias_correction:  # the corrected bias is stored: count it
        graph = add_zero_biases(graph, set(plan.weights))
    return graph, pin_bit_widths(graph, plan, core_config.bit_width_config)


def _observe(
    graph: Graph,
    plan: QuantizationPlan,
    data: RepresentativeData,
    bins: int,
    tensors: list[int] | None = None,
) -> dict[int, TensorStats]:
    """Histogram every tensor the plan quantizes (or just ``tensors``), in one pass of the float model."""
    ids = [t for t, spec in plan.activations.items() if spec.fixed_range is None]  # shared too: for reports
    ids += sorted(plan.fused)  # for runtimes that store what the platform fuses (FusedTensorRange)
    ids = ids if tensors is None else list(tensors)
    if not ids:
        return {}
    built = build_model(graph)
    probe = keras.Model(built.model.inputs, [built.tensors[t] for t in ids])
    producers = {t: node.name for node in graph.nodes for t in node.outputs}
    names = [plan.activations[t].producer if t in plan.activations else producers[t] for t in ids]
    return dict(zip(ids, collect_statistics(probe, names, data, bins), strict=True))


def rewrite_graph(graph: Graph, qc: QuantizationConfig) -> Graph:
    """The float-equivalent rewrites, in order: BN fold, standalone affines (BN, Normalization, Rescaling,
    constant add / multiply) to 1x1 depthwise convolutions, separable split, activation split, then the optional
    collapsing / ReLU-bound rewrites."""
    graph = split_activations(split_separable_convs(lower_affines(fold_batch_norms(graph))))
    if qc.linear_collapsing:
        graph = collapse_linear(graph)
    if qc.residual_collapsing:
        graph = collapse_residual(graph)
    if qc.relu_bound_to_power_of_2:
        graph = bound_relu_to_power_of_2(graph)
    return graph


def _input_means(graph: Graph, plan: QuantizationPlan, data: RepresentativeData) -> dict[str, np.ndarray]:
    """The input of every quantized conv / depthwise / dense node, averaged over samples (float model)."""
    nodes = [n for n in graph.nodes if n.name in plan.weights and n.kind in CORRECTED_KINDS]
    if not nodes:
        return {}
    built = build_model(graph)
    probe = keras.Model(built.model.inputs, [built.tensors[n.inputs[0]] for n in nodes])
    return dict(zip([n.name for n in nodes], collect_mean_maps(probe, data), strict=True))


def _float_bytes(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights) * 4)


def _resolve(
    core_config: CoreConfig | None, tpc: TargetPlatformCapabilities | None
) -> tuple[CoreConfig, TargetPlatformCapabilities]:
    """The defaults (``CoreConfig()``, the imx500 platform) where None, after checking the arguments."""
    core_config = core_config if core_config is not None else CoreConfig()
    tpc = tpc or get_target_platform_capabilities("imx500")
    _check_arguments(core_config, tpc)
    return core_config, tpc


def _check_arguments(core_config: Any, tpc: Any) -> None:
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"kerasq runs on the TensorFlow backend of Keras 3; KERAS_BACKEND is {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras."
        )
    if not isinstance(core_config, CoreConfig):
        raise ValueError(f"core_config must be a kerasq.core.CoreConfig, got {type(core_config).__name__}.")
    if not isinstance(tpc, TargetPlatformCapabilities):
        raise ValueError(
            "target_platform_capabilities must be a TargetPlatformCapabilities, e.g. "
            f"kerasq.get_target_platform_capabilities('imx500'); got {type(tpc).__name__}."
        )
