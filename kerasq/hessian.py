"""Label-free Hessian-trace scores (Hutchinson estimator on the Gauss-Newton approximation).

For a model output ``y(x)`` (all output tensors flattened and concatenated per sample) and a tensor ``a``
(an intermediate activation or a weight variable) the score is

    E_x E_v || d(v . y(x)) / d a ||^2 = E_x trace(J_a(x)^T J_a(x)),   v ~ Rademacher (+-1) in output space,

i.e. the trace of the Gauss-Newton Hessian of ``0.5 * ||y||^2`` w.r.t. ``a``. One backward pass per draw of ``v``.

Units: raw squared output units per squared unit of ``a`` (no normalisation). Element scores are averaged over
samples; "channel" and "tensor" scores are *sums* of the element scores, so ``tensor == sum(element)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kerasq.errors import ConfigError, DataError

GRANULARITIES = ("tensor", "channel", "element")
Batches = Iterable["list[np.ndarray] | np.ndarray"]


@dataclass(frozen=True)
class HessianConfig:
    """Rademacher sampling control. Per batch, draws continue until at least ``min_iterations`` draws were made
    and the relative change of the running mean of every per-tensor total is below ``tolerance`` (this check
    needs two draws), or until ``max_iterations`` draws."""

    max_iterations: int = 50
    min_iterations: int = 3
    tolerance: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("max_iterations", "min_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError(f"HessianConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.min_iterations > self.max_iterations:
            raise ConfigError(
                f"HessianConfig.min_iterations ({self.min_iterations}) must be <= "
                f"max_iterations ({self.max_iterations}); raise max_iterations or lower min_iterations."
            )
        tol = self.tolerance
        if (
            isinstance(tol, bool)
            or not isinstance(tol, int | float | np.floating)
            or not (np.isfinite(tol) and tol > 0)
        ):
            raise ConfigError(
                f"HessianConfig.tolerance must be a finite number > 0 such as 1e-3, got {tol!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ConfigError(f"HessianConfig.seed must be an integer, got {self.seed!r}.")


def _rademacher(shape, seed) -> tf.Tensor:
    bits = tf.random.stateless_uniform(shape, seed=seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, tf.float32)


def _flat(outputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """Model outputs -> one [batch, D] float32 tensor."""
    batch = tf.shape(outputs[0])[0]
    return tf.concat([tf.reshape(tf.cast(o, tf.float32), [batch, -1]) for o in outputs], axis=1)


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _model_input(model: keras.Model, x: list):
    """A lone tensor for single-input models (avoids Keras' input-structure warning), else the list."""
    return x[0] if len(model.inputs) == 1 else x


def _batches(model: keras.Model, batches: Batches) -> Iterable[list[tf.Tensor]]:
    """Validate and convert each batch to a list of float32 tensors, one per model input."""
    n_inputs, seen = len(model.inputs), False
    for i, batch in enumerate(batches):
        arrays = [np.asarray(a, dtype=np.float32) for a in _as_list(batch)]
        if len(arrays) != n_inputs:
            raise DataError(
                f"Hessian data batch {i} has {len(arrays)} arrays but the model has {n_inputs} inputs; give one "
                "array per input, in order."
            )
        sizes = {a.shape[0] if a.ndim else 0 for a in arrays}
        if len(sizes) != 1 or 0 in sizes:
            raise DataError(
                f"Hessian data batch {i}: every input needs the same, non-zero batch size; got {sorted(sizes)}."
            )
        if not all(np.isfinite(a).all() for a in arrays):
            raise DataError(
                f"Hessian data batch {i} contains non-finite values (NaN/Inf); clean or clip the data."
            )
        seen = True
        yield [tf.constant(a) for a in arrays]
    if not seen:
        raise DataError(
            "Hessian scores need data, but the batches iterable yielded no batches; pass at least one."
        )


def _estimate(
    step: Callable, batches: Iterable[list[tf.Tensor]], config: HessianConfig, stats: dict | None
) -> list[np.ndarray]:
    """Run ``step(x, seed) -> per-element sums over the batch of squared gradients`` until convergence, per
    batch; return per-element means over all samples (float64)."""
    sums, n_samples, iterations, draw = None, 0, [], 0
    for x in batches:
        acc, prev, k = None, None, 0
        for k in range(1, config.max_iterations + 1):
            grads = [
                g.numpy().astype(np.float64) for g in step(x, tf.constant([config.seed, draw], tf.int64))
            ]
            draw += 1
            acc = grads if acc is None else [a + g for a, g in zip(acc, grads, strict=True)]
            totals = np.array([a.sum() for a in acc]) / k
            if (
                k >= config.min_iterations
                and prev is not None
                and np.all(np.abs(totals - prev) <= config.tolerance * np.abs(prev))
            ):
                break
            prev = totals
        iterations.append(k)
        assert acc is not None, "HessianConfig keeps max_iterations >= 1"
        means = [a / k for a in acc]
        if sums is not None and [m.shape for m in means] != [s.shape for s in sums]:
            raise DataError(
                "Hessian score tensors changed shape between batches; use batches of one input shape."
            )
        sums = means if sums is None else [s + m for s, m in zip(sums, means, strict=True)]
        n_samples += int(x[0].shape[0])
    if stats is not None:
        stats.update(iterations=iterations, samples=n_samples, draws=draw)
    if sums is None:
        raise DataError("Hessian scores need data, but the batches yielded no batches; pass at least one.")
    return [s / n_samples for s in sums]


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")


def _check_interest(model: keras.Model, n_interest: int) -> None:
    n_outputs = len(model.outputs)
    if isinstance(n_interest, bool) or not isinstance(n_interest, int) or not 1 <= n_interest < n_outputs:
        raise ConfigError(
            f"n_interest must be in [1, {n_outputs - 1}] for a model with {n_outputs} outputs "
            f"(interest tensors first, then at least one model output), got {n_interest!r}"
        )


def _interest_gradients(model: keras.Model, n_interest: int, x: list, seed) -> list[tf.Tensor]:
    """Squared gradients of ``v . y`` w.r.t. each interest tensor, per sample (batch axis kept)."""
    with tf.GradientTape() as tape:
        tape.watch(x)  # else an interest tensor computed from the inputs alone (e.g. Add) is off the tape
        outs = _as_list(model(_model_input(model, x), training=False))
        y = _flat(outs[n_interest:])
        target = tf.reduce_sum(y * _rademacher(tf.shape(y), seed))
    grads = tape.gradient(target, outs[:n_interest], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [tf.square(tf.cast(g, tf.float32)) for g in grads]


def activation_hessian_sample_scores(
    model: keras.Model, n_interest: int, batch: list[np.ndarray], *, config: HessianConfig = HessianConfig()
) -> np.ndarray:
    """Per-sample "tensor" scores of one batch, shape [samples, n_interest]: for each sample, the trace of the
    Gauss-Newton Hessian w.r.t. each interest tensor (same model layout as ``activation_hessian_scores``)."""
    _check_interest(model, n_interest)

    @tf.function(reduce_retracing=True)
    def step(x, seed):  # each sample's total, as a [batch] "element" array
        return [
            tf.reduce_sum(g, axis=tf.range(1, tf.rank(g)))
            for g in _interest_gradients(model, n_interest, x, seed)
        ]

    per_sample = _estimate(step, _batches(model, [batch]), config, None)  # divided by the batch size
    n = len(_as_list(batch)[0])
    return np.stack([s * n for s in per_sample], axis=1)


def activation_hessian_scores(
    model: keras.Model,
    n_interest: int,
    batches: Batches,
    *,
    granularity: str = "tensor",
    config: HessianConfig = HessianConfig(),
    stats: dict | None = None,
) -> list[np.ndarray]:
    """Scores of the interest tensors of a Functional ``model`` whose outputs are ``[a_1..a_k, y_1..y_m]``
    (``k = n_interest``; the ``y`` form the model output). Returns one float64 array per interest tensor:
    "tensor" -> shape () (trace summed over all elements, averaged over samples), "channel" -> shape (C,)
    (summed over all axes except the last), "element" -> ``a.shape[1:]`` (averaged over samples).
    ``stats``, if given, receives ``iterations`` (draws used per batch), ``samples`` and ``draws``.

    Each sample's ``y`` depends only on its own input, so the gradient of ``sum_b v_b . y_b`` w.r.t. the batched
    activation holds the per-sample gradients and one backward pass per draw suffices."""
    _check_granularity(granularity)
    _check_interest(model, n_interest)

    @tf.function(reduce_retracing=True)
    def step(x, seed):
        return [tf.reduce_sum(g, axis=0) for g in _interest_gradients(model, n_interest, x, seed)]

    element = _estimate(step, _batches(model, batches), config, stats)
    if granularity == "element":
        return element
    if granularity == "channel":
        return [e.reshape(-1, e.shape[-1]).sum(axis=0) if e.ndim else e.reshape(1) for e in element]
    return [np.asarray(e.sum()) for e in element]


def _channel_axes(
    variables: list[keras.Variable], channel_axis: Sequence[int | None] | None
) -> list[int | None]:
    """The channel axis of each variable for ``weight_hessian_scores`` (default: the last), one per variable."""
    axes: list[int | None] = [-1] * len(variables) if channel_axis is None else list(channel_axis)
    if len(axes) != len(variables):
        raise ConfigError(
            f"channel_axis has {len(axes)} entries for {len(variables)} variables; give one axis (or None) per variable."
        )
    return axes


def _weight_gradient_step(model: keras.Model, values: list) -> Callable:
    """``_estimate``'s step for ``weight_hessian_scores``: for a batch and a seed, the per-sample squared
    gradients of ``v . y`` w.r.t. ``values`` (the variables' backend ``tf.Variable``), summed over the batch.
    The output width is found once per input shape and passed in, so the traced function sees a constant."""

    def output_dim(x) -> int:
        return int(_flat(_as_list(model(_model_input(model, x), training=False))).shape[1])

    @tf.function(reduce_retracing=True)
    def weight_step(x, seed, dim):
        v = _rademacher(tf.stack([tf.shape(x[0])[0], dim]), seed)

        def one_sample(args):
            xs, vb = args
            with tf.GradientTape() as tape:
                tape.watch(values)  # non-trainable variables are not watched automatically
                y = _flat(_as_list(model(_model_input(model, [xi[None] for xi in xs]), training=False)))
                target = tf.reduce_sum(y[0] * vb)
            grads = tape.gradient(target, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [tf.square(tf.cast(g, tf.float32)) for g in grads]

        per_sample = tf.vectorized_map(one_sample, (tuple(x), v))
        return [tf.reduce_sum(g, axis=0) for g in per_sample]

    dims: dict[tuple, tf.Tensor] = {}

    def dispatch(x, seed):
        key = tuple(tuple(xi.shape[1:]) for xi in x)
        if key not in dims:
            dims[key] = tf.constant(output_dim(x), tf.int32)
        return weight_step(x, seed, dims[key])

    return dispatch


def _weight_scores_at(
    element: list[np.ndarray], granularity: str, axes: list[int | None]
) -> list[np.ndarray]:
    """Per-element weight scores reduced to ``granularity``: as they are ("element"), each variable's total
    ("tensor"), or summed over every axis but its channel axis ("channel"; the total where that is None)."""
    if granularity == "element":
        return element
    if granularity == "tensor":
        return [np.asarray(e.sum()) for e in element]
    out = []
    for e, axis in zip(element, axes, strict=True):
        if axis is None or e.ndim == 0:
            out.append(np.asarray(e.sum()))
        else:
            axis = axis % e.ndim
            out.append(e.sum(axis=tuple(i for i in range(e.ndim) if i != axis)))
    return out


def weight_hessian_scores(
    model: keras.Model,
    variables: Sequence[keras.Variable],
    batches: Batches,
    *,
    granularity: str = "element",
    channel_axis: Sequence[int | None] | None = None,
    config: HessianConfig = HessianConfig(),
    stats: dict | None = None,
) -> list[np.ndarray]:
    """Scores of the (flattened, concatenated) model output w.r.t. weight ``variables`` of layers in ``model``:
    E_x E_v ||d(v . y(x)) / dW||^2 with per-sample squared gradients. "element" -> the variable's shape
    (averaged over samples); "channel" -> shape (C,), summed over all axes except ``channel_axis[i]`` (default:
    the last axis; ``None`` for a variable gives its scalar total); "tensor" -> shape ().

    Per-sample gradients come from ``tf.vectorized_map`` over the batch, each sample running its own forward and
    backward pass on a batch of one; pfor vectorises this into batched ops (ops without a vectorised form fall
    back to a loop inside the graph). Memory is ``batch * n_params`` floats per variable (e.g. 32 x 300k ~ 38 MB),
    and one vectorised backward pass is needed per draw, instead of ``batch`` passes or a full Jacobian."""
    _check_granularity(granularity)
    variables = list(variables)
    if not variables:
        raise ConfigError("weight_hessian_scores needs at least one variable in variables=[...].")
    axes = _channel_axes(variables, channel_axis)
    step = _weight_gradient_step(model, [v.value for v in variables])  # the backend tf.Variables
    element = _estimate(step, _batches(model, batches), config, stats)
    return _weight_scores_at(element, granularity, axes)
