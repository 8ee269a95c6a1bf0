"""The fine-tuning loop: learned rounding (and optionally biases and scales) against the float teacher."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasq.data import RepresentativeData
from kerasq.errors import DataError
from kerasq.gptq.config import GradientPTQConfig
from kerasq.gptq.layers import BlendedActivationQuantizer, SoftRoundingWrapper
from kerasq.gptq.loss import weighted_mse
from kerasq.gptq.soft_rounding import (
    beta_schedule,
    hardness_schedule,
    ramp,
    rectified_sigmoid,
    rounding_penalty,
)
from kerasq.info import GPTQReport
from kerasq.progress import progress

CHECK_BATCHES = 8  # batches on which the learned rounding is compared with rounding to nearest


@dataclass
class TrainingSetup:
    """The models and weights one fine-tuning run needs."""

    student: keras.Model  # inputs -> compare-point tensors of the quantized model (soft rounding)
    teacher: keras.Model  # inputs -> the same compare points in the float model
    weights: np.ndarray  # one loss weight per compare point
    # node name -> its training layer (a shared layer appears under each of its nodes)
    wrappers: dict[str, SoftRoundingWrapper]
    blenders: list[BlendedActivationQuantizer]
    hessian: bool
    # with sample attention: per batch of the fine-tuning data, in order, a [batch, points] weight array
    sample_weights: list[np.ndarray] | None = None


def _unique(wrappers: dict[str, SoftRoundingWrapper]) -> list[SoftRoundingWrapper]:
    return list({id(w): w for w in wrappers.values()}.values())


def _variables(setup: TrainingSetup, config: GradientPTQConfig) -> tuple[list[Any], list[Any]]:
    wrappers = _unique(setup.wrappers)
    rounding = [w.logits[name] for w in wrappers for name in w.kernel_quantizers]
    rest = []
    if config.train_bias:
        rest += [w.layer.bias for w in wrappers if getattr(w.layer, "bias", None) is not None]
    if config.train_scales:
        for w in wrappers:
            rest += [w.log_scale[n] for n, s in w.kernel_quantizers.items() if s.method != "power_of_two"]
    return rounding, rest


def _single(model: keras.Model, x: list[Any]) -> Any:
    return x[0] if len(model.inputs) == 1 else x


def train_rounding(setup: TrainingSetup, data: RepresentativeData, config: GradientPTQConfig) -> GPTQReport:
    """Run ``config.n_epochs`` passes of ``data``; the soft rounding is left in ``setup.wrappers``."""
    rounding, rest = _variables(setup, config)
    wrappers = _unique(setup.wrappers)
    n_elements = float(sum(int(np.prod(v.shape)) for v in rounding))
    batches = data.num_batches()  # known from an earlier pass: no extra read
    total = config.n_epochs * batches
    report = GPTQReport(
        epochs=config.n_epochs, steps=total, compare_points=len(setup.weights), hessian_weights=setup.hessian,
        trained={"rounding": int(n_elements), "rest": int(sum(np.prod(v.shape) for v in rest))},
    )  # fmt: skip
    opt_rounding, opt_rest = config.make_optimizers()
    opt_rounding.build(rounding)
    if rest:
        opt_rest.build(rest)
    loss_fn = config.loss or weighted_mse
    teacher, student = setup.teacher, setup.student

    def reconstruction(x: list[Any], w: Any) -> Any:
        """The loss on batch ``x``; ``w`` [batch, points]: each sample's weight at each compare point."""
        targets = [tf.stop_gradient(t) for t in _as_list(teacher(_single(teacher, x), training=False))]
        outputs = _as_list(student(_single(student, x), training=False))
        return loss_fn(outputs, targets, [w[:, p] for p in range(len(outputs))])

    batch_weights = _batch_weights(setup, data)
    check = [
        ([tf.constant(a) for a in b], w)
        for _, (b, w) in zip(range(CHECK_BATCHES), batch_weights(data), strict=False)
    ]
    initial_rounding, initial_rest = [v.numpy() for v in rounding], [v.numpy() for v in rest]
    scale = _hard_loss(setup, rounding, reconstruction, check, initial_rounding)

    @tf.function(reduce_retracing=True)
    def train_step(x: list[Any], w: Any, step: Any) -> tuple[Any, Any]:
        _set_fraction(setup.blenders, ramp(step, total, config.activation_warmup))
        hard = hardness_schedule(step, total, config.hard_phase)
        for wrapper in wrappers:
            wrapper.hardness.assign(hard)
        beta = beta_schedule(step, total, config.rounding_warmup)
        with tf.GradientTape() as tape:
            recon = reconstruction(x, w) / scale
            reg = tf.add_n([rounding_penalty(v, beta) for v in rounding]) / n_elements
            loss = recon + config.regularization * reg
        grads = tape.gradient(loss, rounding + rest)
        opt_rounding.apply_gradients(zip(grads[: len(rounding)], rounding, strict=True))
        if rest:
            opt_rest.apply_gradients(zip(grads[len(rounding) :], rest, strict=True))
        return recon, reg

    start = time.perf_counter()
    _run_epochs(train_step, batch_weights, data, batches, config, report)
    report.seconds = time.perf_counter() - start
    learned = [v.numpy() for v in rounding]
    report.final_loss = _hard_loss(setup, rounding, reconstruction, check, learned) / scale
    if report.final_loss >= 1.0:  # worse than rounding to nearest: deploy the PTQ solution instead
        report.kept_ptq = True
        for v, value in zip(rounding + rest, initial_rounding + initial_rest, strict=True):
            v.assign(value)
    report.flipped = _flipped_fraction(_unique(setup.wrappers))
    return report


def _run_epochs(
    train_step: Callable[..., tuple[Any, Any]],
    batch_weights: Callable[[RepresentativeData], Iterator[tuple[list[np.ndarray], tf.Tensor]]],
    data: RepresentativeData,
    batches: int,
    config: GradientPTQConfig,
    report: GPTQReport,
) -> None:
    """``config.n_epochs`` passes of ``data`` through ``train_step`` (steps numbered from 0 across epochs, which
    the schedules follow), each epoch's mean reconstruction loss and regularizer appended to ``report`` and
    passed to ``config.log_function``."""
    step = 0
    for epoch in range(config.n_epochs):
        recon_sum, reg_sum, count = 0.0, 0.0, 0
        previous = f", loss {report.loss[-1]:.4f}" if report.loss else ""
        desc = f"GPTQ epoch {epoch + 1}/{config.n_epochs}{previous}"
        for batch, w in progress(batch_weights(data), desc, total=batches):
            recon, reg = train_step([tf.constant(a) for a in batch], w, tf.constant(step, tf.int64))
            recon_sum, reg_sum = recon_sum + float(recon), reg_sum + float(reg)
            count, step = count + 1, step + 1
        report.loss.append(recon_sum / max(count, 1))
        report.regularizer.append(reg_sum / max(count, 1))
        if config.log_function is not None:
            config.log_function(epoch, report.loss[-1], report.regularizer[-1])


def _batch_weights(setup: TrainingSetup, data: RepresentativeData) -> Any:
    """A function giving ``(batch, weights [batch, points])`` for each batch of ``data``, in order. With sample
    attention the weights were measured per sample for this order, which is checked batch by batch."""

    def pairs(batches: Any) -> Iterator[tuple[list[np.ndarray], tf.Tensor]]:
        for index, batch in enumerate(batches):
            n = len(batch[0])
            if setup.sample_weights is None:
                yield batch, tf.constant(np.broadcast_to(setup.weights, (n, len(setup.weights))), tf.float32)
                continue
            if index >= len(setup.sample_weights) or setup.sample_weights[index].shape[0] != n:
                raise DataError(
                    "use_hessian_sample_attention needs the fine-tuning data in the same batches and order every "
                    "epoch (arrays or a deterministic generator, no shuffling)."
                )
            yield batch, tf.constant(setup.sample_weights[index], tf.float32)

    return pairs


def _hard_loss(
    setup: TrainingSetup,
    rounding: list[Any],
    reconstruction: Any,
    batches: list[tuple[list[Any], Any]],
    logits: list[Any],
) -> float:
    """Mean reconstruction loss over ``batches`` with the rounding decided from ``logits`` (the initial ones give
    rounding to nearest) and activations fully quantized: what the deployed model does. The rounding variables
    are restored afterwards."""
    saved = [v.numpy() for v in rounding]
    for v, value in zip(rounding, logits, strict=True):
        h = np.asarray(rectified_sigmoid(value))
        v.assign(np.where(h >= 0.5, 10.0, -10.0).astype(np.float32))  # h exactly 1 / 0
    _set_fraction(setup.blenders, 1.0)
    value = float(np.mean([float(reconstruction(b, w)) for b, w in batches]))
    for v, s in zip(rounding, saved, strict=True):
        v.assign(s)
    return value if np.isfinite(value) and value > 0 else 1.0


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _set_fraction(blenders: list[BlendedActivationQuantizer], value: Any) -> None:
    for layer in blenders:
        layer.fraction.assign(value)


def _flipped_fraction(wrappers: list[SoftRoundingWrapper]) -> float:
    """Share of kernel values whose learned rounding differs from rounding to nearest."""
    flipped, total = 0, 0
    for w in wrappers:
        for name in w.kernel_quantizers:
            ratio = np.asarray(getattr(w.layer, name)) / w.kernel_grid(name)[0]
            nearest_up = (ratio - np.floor(ratio)) >= 0.5
            learned_up = np.asarray(rectified_sigmoid(w.logits[name])) >= 0.5
            flipped += int(np.sum(nearest_up != learned_up))
            total += nearest_up.size
    return flipped / max(total, 1)
