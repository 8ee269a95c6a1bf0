"""Post-training quantization of a Keras 3 model, top to bottom."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from kerasq.builder import build_model
from kerasq.core.config import CoreConfig
from kerasq.core.enums import QuantizationErrorMethod
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.graph import read_model
from kerasq.graph.model_graph import Graph
from kerasq.graph.rewrites import fold_batch_norms, split_activations, split_separable_convs
from kerasq.info import QuantizationInfo, build_info
from kerasq.params.selection import choose_params
from kerasq.platform import TargetPlatformCapabilities, get_target_platform_capabilities
from kerasq.platform.assign import QuantizationPlan, assign_quantization
from kerasq.statistics import TensorStats, collect_statistics


def keras_post_training_quantization(
    model: keras.Model,
    representative_data_gen: Any,
    target_resource_utilization: Any = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """Quantize ``model`` with statistics from ``representative_data_gen``; the float model is not modified.

    Args:
        model: a Keras 3 Functional or Sequential model (nested sub-models are flattened).
        representative_data_gen: calibration data: a zero-argument callable yielding batches (each a list
            with one array per model input), a ``tf.data.Dataset``, or numpy array(s).
        target_resource_utilization: memory/compute budget for mixed precision.
        core_config: threshold-selection options (``CoreConfig(QuantizationConfig(...))``).
        target_platform_capabilities: device rules; defaults to ``get_target_platform_capabilities("imx500")``.

    Returns:
        ``(quantized_model, QuantizationInfo)``.
    """
    core_config = core_config if core_config is not None else CoreConfig()
    qc = core_config.quantization_config
    tpc = target_platform_capabilities or get_target_platform_capabilities("imx500")
    _check_arguments(target_resource_utilization, core_config, tpc)

    graph = read_model(model)
    data = RepresentativeData(representative_data_gen, input_specs_from_model(model))
    graph = split_activations(split_separable_convs(fold_batch_norms(graph)))
    plan = assign_quantization(graph, tpc, qc)
    stats = _observe(graph, plan, data, qc.num_histogram_bins)
    params = choose_params(graph, plan, stats, qc)
    quantized = build_model(graph, plan, params, name=f"{model.name}_quantized").model
    info = build_info(graph, plan, params, tpc.name, _float_bytes(model))
    return quantized, info


def _observe(
    graph: Graph, plan: QuantizationPlan, data: RepresentativeData, bins: int
) -> dict[int, TensorStats]:
    """Histogram every tensor the plan quantizes, in one pass of the (folded) float model."""
    ids = [
        t for t, spec in plan.activations.items() if spec.fixed_range is None and spec.shares_grid_of is None
    ]
    if not ids:
        return {}
    built = build_model(graph)
    probe = keras.Model(built.model.inputs, [built.tensors[t] for t in ids])
    names = [plan.activations[t].producer for t in ids]
    return dict(zip(ids, collect_statistics(probe, names, data, bins), strict=True))


def _float_bytes(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights) * 4)


def _check_arguments(budget: Any, core_config: Any, tpc: Any) -> None:
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
    if budget is not None:
        raise ValueError(
            "target_resource_utilization (mixed precision under a memory/compute budget) is not part of this "
            "release; pass None to quantize at the platform's default bit widths."
        )
    if core_config.quantization_config.weights_error_method is QuantizationErrorMethod.HMSE:
        raise ValueError(
            "weights_error_method=HMSE needs Hessian scores from the mixed-precision service, which is not part "
            "of this release; use MSE, MAE, LP, KL or NOCLIPPING."
        )
