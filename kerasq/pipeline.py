"""The quantization pipeline, top to bottom: the stages every workflow (PTQ, GPTQ, budget search) runs.

``prepare`` (read, rewrite, plan, statistics, corrections' inputs, grid cache) → ``choose_bits`` (mixed
precision) → ``corrected`` (grids at the plan's widths, compensated rounding, bias correction) → ``assemble``
(quantized model and report). ``finish`` is the last two. Internal: the public entry points are
``kerasq.ptq``, ``kerasq.gptq`` and ``kerasq.budget_search``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kerasq.builder import LayerPool, build_model
from kerasq.config.config import CoreConfig
from kerasq.config.resource_utilization import ResourceUtilization
from kerasq.corrections.bias_correction import CORRECTED_KINDS, add_zero_biases, correct_biases, with_kernels
from kerasq.corrections.compensated_kernels import KernelCompensation
from kerasq.corrections.shift_negative_correction import apply_shift_negative, shifted_input_means
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.errors import BackendError, ConfigError
from kerasq.graph import read_model
from kerasq.graph.model_graph import Graph, Node
from kerasq.graph.rewrites import rewrite_graph
from kerasq.hessian import weight_hessian_scores
from kerasq.info import QuantizationInfo, build_info
from kerasq.mixed_precision.bit_allocation import AllocationInputs, MixedPrecisionReport, allocate_bits
from kerasq.params.error_methods import error_method_spec
from kerasq.params.grid_cache import GridCache
from kerasq.plan import QuantizationParams, QuantizationPlan, range_is_fixed
from kerasq.platform import TargetPlatformCapabilities, get_target_platform_capabilities
from kerasq.platform.assign import assign_quantization
from kerasq.platform.manual_bits import pin_bit_widths
from kerasq.resources.utilization import resource_utilization, with_sample_shapes
from kerasq.statistics import TensorStats, observe
from kerasq.statistics.concat_ranges import concat_range_warnings
from kerasq.statistics.constant import constant_tensor_warning

logger = logging.getLogger(__name__)


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
    float_layers: LayerPool | None = None  # the statistics model's clones, for the quantized model to wrap
    compensation: KernelCompensation | None = None  # low-bit kernels' error-compensated rounding (lazy)


def choose_bits(
    prepared: Prepared, target: ResourceUtilization | None
) -> tuple[QuantizationPlan, MixedPrecisionReport | None]:
    """The plan at mixed-precision widths when a budget (or a configuration overwrite) is given, else as is."""
    mp_config = prepared.core_config.mixed_precision_config
    if target is None and mp_config.configuration_overwrite is None:
        return prepared.plan, None
    if target is not None:  # the search measures sensitivity on num_of_images samples
        prepared.data.warn_if_fewer(
            mp_config.num_of_images,
            "MixedPrecisionQuantizationConfig.num_of_images",
            "mixed-precision sensitivity",
        )
    return allocate_bits(allocation_inputs(prepared), target)


def allocation_inputs(prepared: Prepared) -> AllocationInputs:
    """What mixed precision reads of ``prepared``."""
    return AllocationInputs(
        graph=prepared.graph, plan=prepared.plan, grids=prepared.grids, data=prepared.data,
        config=prepared.core_config.mixed_precision_config, input_means=prepared.input_means,
        compensation=prepared.compensation,
    )  # fmt: skip


def prepare(
    model: keras.Model,
    representative_data_gen: Any,
    core_config: CoreConfig | None,
    tpc: TargetPlatformCapabilities | None,
) -> Prepared:
    """read → rewrites → plan (platform + manual bits) → statistics → shift-negative correction → input means
    (bias correction) → Hessian scores (HMSE) → grid cache (and, for low-bit kernels, the input statistics of
    compensated rounding, gathered when first needed)."""
    core_config, tpc = _resolve(core_config, tpc)
    qc = core_config.quantization_config
    graph, plan = plan_model(model, None, core_config, tpc)
    data = RepresentativeData(
        representative_data_gen, input_specs_from_model(model), max_batches=core_config.n_iter
    )
    graph = with_sample_shapes(graph, data.first_batch())  # sizes of dims the model leaves open
    corrected = _corrected_nodes(graph, plan) if qc.weights_bias_correction else []
    stats, means, float_layers = _observe(
        graph, plan, data, qc.num_histogram_bins, [n.inputs[0] for n in corrected]
    )
    input_means = dict(zip([n.name for n in corrected], means, strict=True))
    constant = _constant_warning(graph, plan, stats)
    corrected_graph, plan, warnings = apply_shift_negative(graph, plan, stats, qc, tpc)
    if corrected_graph is not graph:  # the means of the shifted inputs follow from those before the shift
        graph, input_means = corrected_graph, shifted_input_means(corrected_graph, input_means)
    importance = None
    if error_method_spec(qc.weights_error_method).needs_importance:
        n_images = core_config.mixed_precision_config.num_of_images
        data.warn_if_fewer(
            n_images, "MixedPrecisionQuantizationConfig.num_of_images", "Hessian scores (HMSE)"
        )
        importance = kernel_importance(graph, plan, data.take(n_images))
    grids = GridCache(graph, stats, qc, importance)
    warnings += concat_range_warnings(graph, stats) + constant
    compensation = KernelCompensation(graph, data) if qc.weights_compensated_rounding else None
    return Prepared(
        model=model, graph=graph, plan=plan, data=data, grids=grids, core_config=core_config, tpc=tpc,
        input_means=input_means, warnings=warnings, float_layers=float_layers, compensation=compensation,
    )  # fmt: skip


def finish(
    prepared: Prepared, plan: QuantizationPlan, mixed: MixedPrecisionReport | None = None
) -> tuple[keras.Model, QuantizationInfo]:
    """Grids at the plan's widths → compensated rounding of low-bit kernels → bias correction → quantized model
    → report."""
    graph, params = corrected(prepared, plan)
    return assemble(prepared, graph, plan, params, mixed)


def corrected(
    prepared: Prepared, plan: QuantizationPlan, compensate: bool = True
) -> tuple[Graph, QuantizationParams]:
    """The grids at the plan's widths, and the graph with biases corrected for those grids.

    ``compensate``: low-bit kernels take their error-compensated rounding (when the configuration asks for it);
    the graph then holds those kernels, already on their grids, and the biases correct their errors.
    """
    params = prepared.grids.params_for(plan)
    kernels = prepared.compensation.kernels(params) if compensate and prepared.compensation else {}
    graph = correct_biases(prepared.graph, params, prepared.input_means, kernels)
    return with_kernels(graph, kernels), params


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
        graph,
        plan,
        params,
        name=name,
        reference_inputs=_reference_inputs(prepared),
        pool=prepared.float_layers,
    ).model
    warnings = list(dict.fromkeys(prepared.data.warnings + prepared.warnings))  # data findings come first
    info = build_info(
        graph, plan, params, prepared.tpc.name, _float_bytes(prepared.model),
        resource_utilization(graph, plan), mixed, warnings,
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
    if representative_data_gen is not None:  # validated; its sample shapes size dims the model leaves open
        data = RepresentativeData(representative_data_gen, input_specs_from_model(model))
        graph = with_sample_shapes(graph, data.first_batch())
    graph = rewrite_graph(graph, core_config.quantization_config)
    plan = assign_quantization(graph, tpc, core_config.quantization_config)
    if core_config.quantization_config.weights_bias_correction:  # the corrected bias is stored: count it
        graph = add_zero_biases(graph, set(plan.weights))
    return graph, pin_bit_widths(graph, plan, core_config.bit_width_config)


def kernel_importance(
    graph: Graph, plan: QuantizationPlan, samples: list[np.ndarray]
) -> dict[tuple[str, str], np.ndarray]:
    """Per-weight importance for ``QuantizationErrorMethod.HMSE``: (node, kernel) -> per-element label-free
    Hessian score ``E ||d(v.y)/dw||^2`` of the (folded) float model's output."""
    built = build_model(graph)
    keys = [(node, kernel) for node, kernels in plan.weights.items() for kernel in kernels]
    if not keys:
        return {}
    variables = [getattr(built.layers[node], kernel) for node, kernel in keys]
    scores = weight_hessian_scores(built.model, variables, [samples], granularity="element")
    # a weight no output depends on would get zero importance everywhere; keep a floor so the search is defined
    return {key: np.maximum(s, 1e-12 * (s.max() + 1e-30)) for key, s in zip(keys, scores, strict=True)}


def keras_resource_utilization_data(
    in_model: keras.Model,
    representative_data_gen: Any = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> ResourceUtilization:
    """Resource figures of ``in_model`` quantized at the platform's default bit widths (and manual bits).

    The figures depend only on the model, the platform and the configs. ``representative_data_gen`` is checked
    against the model's inputs; its sample shapes size the dimensions the model leaves open (without it, a model
    input such as ``Input((None, None, 3))`` is refused with a ``ConfigError``).
    """
    graph, plan = plan_model(in_model, representative_data_gen, core_config, target_platform_capabilities)
    return resource_utilization(graph, plan)


def _observe(
    graph: Graph, plan: QuantizationPlan, data: RepresentativeData, bins: int, averaged: list[int]
) -> tuple[dict[int, TensorStats], list[np.ndarray], LayerPool | None]:
    """Histogram every tensor the plan quantizes, and average the tensors ``averaged`` over samples, in one
    pass of the float model of ``graph``; that model's clones of the layers with quantized weights stay for
    the quantized model to wrap (building them again costs as much as the pass on a few batches)."""
    ids = [t for t, spec in plan.activations.items() if not range_is_fixed(plan, spec)]  # shared too: reports
    ids += sorted(plan.fused)  # for runtimes that store what the platform fuses (FusedTensorRange)
    if not ids and not averaged:
        return {}, [], None
    position = {t: i for i, t in enumerate(_graph_order(graph))}
    ids = sorted(ids, key=lambda t: position.get(t, len(position)))  # errors name the earliest tensor first
    built = build_model(graph)
    probe = keras.Model(built.model.inputs, [built.tensors[t] for t in ids + averaged])
    names = _tensor_names(graph, plan, ids)
    seen = observe(probe, names, data, bins, locate=_first_non_finite(graph, built))
    return dict(zip(ids, seen.stats, strict=True)), seen.means, LayerPool(graph, built, set(plan.weights))


def _graph_order(graph: Graph) -> list[int]:
    """Every tensor id in topological order: the model inputs, then each node's outputs."""
    return list(graph.inputs) + [t for node in graph.nodes for t in node.outputs]


def _tensor_names(graph: Graph, plan: QuantizationPlan, ids: list[int]) -> list[str]:
    """The layer (or model input) that produces each tensor."""
    producers = {t: node.name for node in graph.nodes for t in node.outputs}
    return [plan.activations[t].producer if t in plan.activations else producers[t] for t in ids]


def _first_non_finite(graph: Graph, built: Any) -> Callable[[list[np.ndarray]], str | None]:
    """A function naming the first layer, in graph order, whose output on a batch is not finite (observed or
    not: the culprit is often a float layer before the quantized tensor that shows it)."""

    def locate(batch: list[np.ndarray]) -> str | None:
        producers = graph.producers()
        ids = [t for t in _graph_order(graph) if t in built.tensors and t in producers]
        probe = keras.Model(built.model.inputs, [built.tensors[t] for t in ids])
        values = keras.tree.flatten(probe(list(batch), training=False))
        for tensor, value in zip(ids, values, strict=True):
            value = np.asarray(value)
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                node = producers[tensor]
                return f"layer {node.name!r} ({type(node.op).__name__})"
        return None

    return locate


def _constant_warning(graph: Graph, plan: QuantizationPlan, stats: dict[int, TensorStats]) -> list[str]:
    """The warning naming quantized layer outputs that never varied (model inputs are the data's warning)."""
    ids = [t for t in stats if t in plan.activations and t not in graph.inputs]
    named = dict(zip(_tensor_names(graph, plan, ids), (stats[t] for t in ids), strict=True))
    message = constant_tensor_warning(named)
    if message is not None:
        logger.warning(message)
    return [message] if message is not None else []


def _corrected_nodes(graph: Graph, plan: QuantizationPlan) -> list[Node]:
    """The quantized conv / depthwise / dense nodes bias correction adjusts (it needs their mean inputs)."""
    return [n for n in graph.nodes if n.name in plan.weights and n.kind in CORRECTED_KINDS]


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
        raise BackendError(
            f"kerasq runs on the TensorFlow backend of Keras 3; KERAS_BACKEND is {keras.backend.backend()!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras."
        )
    if not isinstance(core_config, CoreConfig):
        raise ConfigError(f"core_config must be a kerasq.core.CoreConfig, got {type(core_config).__name__}.")
    if not isinstance(tpc, TargetPlatformCapabilities):
        raise ConfigError(
            "target_platform_capabilities must be a TargetPlatformCapabilities, e.g. "
            f"kerasq.get_target_platform_capabilities('imx500'); got {type(tpc).__name__}."
        )
