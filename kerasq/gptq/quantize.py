"""Gradient-based post-training quantization, top to bottom.

This fine-tunes the *rounding* of every quantized kernel (AdaRound-style learned up/down rounding, optionally
with biases and kernel scales) so the quantized model's layer outputs match the float model's on the
representative data. It is what MCT calls "GPTQ"; it is not the column-by-column second-order GPTQ of
Frantar et al.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import keras
import numpy as np

from kerasq.builder import build_model
from kerasq.config.config import CoreConfig
from kerasq.config.resource_utilization import ResourceUtilization
from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.errors import ConfigError, DataError, ModelError
from kerasq.gptq.config import GradientPTQConfig
from kerasq.gptq.layers import BlendedActivationQuantizer, SoftRoundingWrapper
from kerasq.gptq.loss import energy_weights, hessian_weights, sample_weights
from kerasq.gptq.training import TrainingSetup, train_rounding
from kerasq.graph.model_graph import Graph
from kerasq.hessian import HessianConfig, activation_hessian_sample_scores
from kerasq.info import QuantizationInfo
from kerasq.pipeline import assemble, choose_bits, corrected, prepare
from kerasq.plan import QuantizationParams, QuantizationPlan
from kerasq.platform import TargetPlatformCapabilities
from kerasq.progress import progress

# per-sample estimates need more draws than per-tensor totals over a batch (each sample sees fewer terms)
SAMPLE_HESSIAN = HessianConfig(min_iterations=8, max_iterations=50)


def keras_gradient_post_training_quantization(
    model: keras.Model,
    representative_data_gen: Any,
    gptq_config: GradientPTQConfig,
    gptq_representative_data_gen: Any = None,
    target_resource_utilization: ResourceUtilization | None = None,
    core_config: CoreConfig | None = None,
    target_platform_capabilities: TargetPlatformCapabilities | None = None,
) -> tuple[keras.Model, QuantizationInfo]:
    """Post-training quantization (optionally mixed precision), then label-free fine-tuning of the rounding.

    Args:
        model: the float Keras 3 Functional or Sequential model (never modified).
        representative_data_gen: calibration data (same forms as ``keras_post_training_quantization``).
        gptq_config: from ``get_keras_gptq_config(n_epochs, ...)``.
        gptq_representative_data_gen: data for fine-tuning; defaults to ``representative_data_gen``. It is used
            once per epoch (replayed from memory when it fits, else read again), so it must be re-iterable (arrays,
            a ``tf.data.Dataset`` or a function returning a generator). ``core_config.n_iter`` bounds it too.
        target_resource_utilization: a mixed-precision budget, as for PTQ.
        core_config, target_platform_capabilities: as for PTQ.

    Returns:
        ``(quantized_model, QuantizationInfo)``; ``info.gptq`` reports the fine-tuning. Every kernel is exactly on
        its grid, and the model is made of the same layers as a PTQ result (it saves, loads and exports alike).
    """
    if not isinstance(gptq_config, GradientPTQConfig):
        raise ConfigError(
            "gptq_config must be a GradientPTQConfig, e.g. kerasq.gptq.get_keras_gptq_config(n_epochs=5); "
            f"got {type(gptq_config).__name__}."
        )
    prepared = prepare(model, representative_data_gen, core_config, target_platform_capabilities)
    plan, mixed = choose_bits(prepared, target_resource_utilization)
    graph, params = corrected(prepared, plan, compensate=False)  # it learns the rounding of the float kernels
    data = prepared.data
    if gptq_representative_data_gen is not None:
        data = RepresentativeData(
            gptq_representative_data_gen,
            input_specs_from_model(model),
            max_batches=prepared.core_config.n_iter,
        )
    if not data.reiterable:
        raise DataError(
            "Fine-tuning reads its data once per epoch, but a generator object can be read only once: pass the "
            "function that creates it (gptq_representative_data_gen=make_batches), arrays or a tf.data.Dataset."
        )
    setup = training_setup(prepared.graph, graph, plan, params, data, gptq_config)
    report = train_rounding(setup, data, gptq_config)
    graph, params = harden(graph, params, setup.wrappers)
    quantized, info = assemble(prepared, graph, plan, params, mixed)
    info.warnings += [w for w in data.warnings if w not in info.warnings]  # the fine-tuning data's own
    info.gptq = report
    return quantized, info


def compare_points(graph: Graph, params: QuantizationParams) -> list[int]:
    """The outputs of the quantized weighted layers, in graph order."""
    return [node.outputs[0] for node in graph.nodes if params.weights.get(node.name)]


def training_setup(
    float_graph: Graph,
    graph: Graph,
    plan: QuantizationPlan,
    params: QuantizationParams,
    data: RepresentativeData,
    config: GradientPTQConfig,
) -> TrainingSetup:
    """Student (soft rounding, quantized activations) and teacher (float) models read at the compare points,
    and the weight of each point in the loss."""
    points = compare_points(graph, params)
    if not points:
        raise ModelError(
            "The model has no quantized conv / depthwise / dense layer, so there is no rounding to fine-tune; "
            "use keras_post_training_quantization."
        )
    teacher_built = build_model(float_graph)
    teacher = keras.Model(_inputs(teacher_built.model), [teacher_built.tensors[t] for t in points])
    student_built = build_model(
        graph, plan, params, wrapper=SoftRoundingWrapper, activation_quantizer=BlendedActivationQuantizer
    )
    student = keras.Model(_inputs(student_built.model), [student_built.tensors[t] for t in points])
    per_sample = None
    if config.use_hessian_based_weights:
        probe = keras.Model(_inputs(teacher), teacher.outputs + _as_list(teacher_built.model.outputs))
        data.warn_if_fewer(
            config.hessian_num_samples, "GradientPTQConfig.hessian_num_samples", "Hessian weights"
        )
        weights = hessian_weights(probe, len(points), data.take(config.hessian_num_samples))
        if config.use_hessian_sample_attention:
            scores = [
                activation_hessian_sample_scores(probe, len(points), batch, config=SAMPLE_HESSIAN)
                for batch in progress(data, "Hessian per sample")
            ]
            per_sample = sample_weights(scores)
    else:
        first = data.first_batch()
        weights = energy_weights(_as_list(teacher(first[0] if len(first) == 1 else first, training=False)))
    layers = student_built.model.layers
    return TrainingSetup(
        student=student, teacher=teacher, weights=weights, sample_weights=per_sample,
        wrappers={n: w for n, w in student_built.layers.items() if isinstance(w, SoftRoundingWrapper)},
        blenders=[layer for layer in layers if isinstance(layer, BlendedActivationQuantizer)],
        hessian=config.use_hessian_based_weights,
    )  # fmt: skip


def harden(
    graph: Graph, params: QuantizationParams, wrappers: dict[str, SoftRoundingWrapper]
) -> tuple[Graph, QuantizationParams]:
    """The graph with every fine-tuned layer's kernels at their learned rounding (exactly on the grid) and its
    trained bias, and the grids with any trained scale. ``wrappers``: node name -> its training layer."""
    weights = {name: dict(kernels) for name, kernels in params.weights.items()}
    hardened = {}  # per layer, once: a shared layer appears under several nodes
    for wrapper in {id(w): w for w in wrappers.values()}.values():
        hardened[id(wrapper)] = wrapper.hardened()
        for kernel_name, (kernel, _) in hardened[id(wrapper)].items():
            getattr(wrapper.layer, kernel_name).assign(kernel)
    nodes = []
    for node in graph.nodes:
        trained = wrappers.get(node.name)
        if trained is None:
            nodes.append(node)
            continue
        for kernel_name, (_, scale) in hardened[id(trained)].items():
            grid = weights[node.name][kernel_name]
            new_scale = scale.reshape(grid.scale.shape).astype(np.float32)
            threshold = None if grid.threshold is None else grid.threshold * (new_scale / grid.scale)
            weights[node.name][kernel_name] = replace(grid, scale=new_scale, threshold=threshold)
        nodes.append(replace(node, weights=[np.asarray(w) for w in trained.layer.get_weights()]))
    return graph.with_nodes(nodes), replace(params, weights=weights)


def _inputs(model: keras.Model) -> Any:
    """A single input as a plain tensor (the structure ``model(x)`` is then called with), else the list."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]
