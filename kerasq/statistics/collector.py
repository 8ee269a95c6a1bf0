"""One streaming pass over the representative data: a histogram and min/max for every observed tensor, and
the mean over samples of the tensors bias correction needs.

A probe model returns the tensors to observe, then the tensors to average; a step computes each observed
tensor's batch histogram on the running power-of-two range and each averaged tensor's sum over the batch inside
TensorFlow, so only small vectors come back to numpy. The step runs eagerly for the first batches and compiled
after (``batch_runner``). Both results come from the same model call: one pass, one trace.

Non-finite values (NaN, +-inf, or magnitudes whose power-of-two range overflows float32) never reach a
histogram op: TensorFlow's ``histogram_fixed_width`` crashes the process on an infinite range. The step skips
every histogram of a batch that holds any, and the batch is reported as a ``DataError`` naming the tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kerasq.data import RepresentativeData
from kerasq.errors import DataError
from kerasq.progress import progress
from kerasq.statistics.batch_runner import BatchRunner, as_tensors, call_model, input_signature
from kerasq.statistics.histogram import TensorStats, merge_batch

_TINY = 2.0**-24
_LARGEST_RANGE = 2.0**127  # the largest power-of-two histogram range float32 holds

SHOWN = 3  # tensors named in an error or warning; the rest are counted
Locate = Callable[[list[np.ndarray]], str | None]  # batch -> where its first non-finite value arises


@dataclass(frozen=True)
class Observation:
    """What one pass saw: ``stats[i]`` of the i-th observed tensor, ``means[j]`` of the j-th averaged one (its
    mean over samples: one value per position and channel, so border effects of padded convolutions stay
    exact)."""

    stats: list[TensorStats]
    means: list[np.ndarray]


def _make_step(probe: keras.Model, num_bins: int, observed: int) -> Callable[..., tuple]:
    """The per-batch statistics of the first ``observed`` ``probe`` outputs and the batch sums of the others.
    Ranges are computed for all tensors at once, so each tensor adds only its own reductions and histogram to
    the graph (a few ops, not two dozen)."""

    def step(inputs: list[tf.Tensor], ranges: tf.Tensor) -> tuple:
        results = call_model(probe, inputs)
        sums = [tf.reduce_sum(tf.cast(t, tf.float64), axis=0) for t in results[observed:]]
        outputs = [tf.cast(t, tf.float32) for t in results[:observed]]
        if not outputs:  # only means were asked for
            empty = tf.zeros((0,), tf.float32)
            no_counts, no_flags, no_sizes = (
                tf.zeros((0, num_bins), tf.int32),
                tf.zeros((0,), tf.bool),
                tf.zeros((0,), tf.int32),
            )
            return no_counts, empty, empty, empty, no_flags, no_sizes, sums
        lows = tf.stack([tf.reduce_min(t) for t in outputs])
        highs = tf.stack([tf.reduce_max(t) for t in outputs])
        # min and max propagate NaN, so a tensor is finite exactly when both are: no per-tensor pass for it.
        finite = tf.logical_and(tf.math.is_finite(lows), tf.math.is_finite(highs))
        sizes = _sizes(outputs)
        amax = tf.maximum(tf.maximum(tf.abs(lows), tf.abs(highs)), _TINY)
        needed = tf.pow(2.0, tf.math.ceil(tf.math.log(amax) / tf.math.log(2.0)))
        needed = tf.where(needed < amax, needed * 2.0, needed)  # guard log rounding
        hist_range = tf.maximum(ranges, needed)
        finite = tf.logical_and(finite, tf.math.is_finite(hist_range))  # 2**128 overflows float32

        def histograms() -> tf.Tensor:
            bounds = tf.unstack(tf.stack([-hist_range, hist_range], axis=1))  # one op, not one slice each
            return tf.stack(
                [tf.histogram_fixed_width(t, b, nbins=num_bins) for t, b in zip(outputs, bounds, strict=True)]
            )

        def skipped() -> tf.Tensor:
            return tf.zeros((len(outputs), num_bins), tf.int32)

        counts = tf.cond(tf.reduce_all(finite), histograms, skipped)
        # Stacked, so each batch costs six device-to-host copies (plus the sums) whatever the number of tensors.
        return counts, hist_range, lows, highs, finite, sizes, sums

    return step


def _sizes(outputs: list[tf.Tensor]) -> tf.Tensor:
    """Element counts: from the static shape where it is known (always, run eagerly), else a ``tf.size``."""
    known = [t.shape.num_elements() for t in outputs]
    if all(n is not None for n in known):
        return tf.constant(known, tf.int32)
    return tf.stack([tf.size(t) for t in outputs])


def collect_statistics(
    probe: keras.Model,
    names: Sequence[str],
    data: RepresentativeData,
    num_bins: int = 4096,
    locate: Locate | None = None,
) -> list[TensorStats]:
    """Run ``probe`` (outputs = tensors to observe, named ``names``: their layers) over ``data``; one
    ``TensorStats`` each. ``locate``, given a batch with non-finite values, names where they first arise (for
    the error message)."""
    return observe(probe, names, data, num_bins, locate).stats


def observe(
    probe: keras.Model,
    names: Sequence[str],
    data: RepresentativeData,
    num_bins: int = 4096,
    locate: Locate | None = None,
) -> Observation:
    """``collect_statistics`` of the first ``len(names)`` outputs of ``probe``, and the mean over samples of
    every further output, in the same pass."""
    signature = input_signature(probe)
    step = BatchRunner(
        _make_step(probe, num_bins, len(names)),
        [signature, tf.TensorSpec((len(names),), tf.float32)],
        expected_calls=data.expected_batches(),
    )
    stats: list[TensorStats | None] = [None] * len(names)
    sums: list[np.ndarray] | None = None
    count = 0
    ranges = np.zeros(len(names), np.float32)
    for index, batch in enumerate(progress(data, desc="kerasq: statistics")):
        *results, batch_sums = step(as_tensors(batch, signature), tf.convert_to_tensor(ranges))
        counts, hist_ranges, lows, highs, finite, sizes = [r.numpy() for r in results]
        batch_sums = [t.numpy() for t in batch_sums]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums, strict=True)]
        count += len(batch[0])
        if not finite.all():
            bad = np.flatnonzero(~finite)
            where = locate(batch) if locate is not None else None
            raise DataError(
                non_finite_message([names[int(i)] for i in bad], lows[bad], highs[bad], index, where)
            )
        for i, row in enumerate(zip(counts, hist_ranges, lows, highs, sizes, strict=True)):
            merged = merge_batch(stats[i], row[0], float(row[1]), float(row[2]), float(row[3]), int(row[4]))
            stats[i], ranges[i] = merged, merged.hist_range
    complete = [s for s in stats if s is not None]
    if sums is None or len(complete) != len(stats):
        raise DataError("representative data produced no batches; statistics cannot be collected.")
    return Observation(stats=complete, means=[total / count for total in sums])


def describe_values(low: float, high: float) -> str:
    """What is wrong with a tensor whose values span [low, high] but are not all usable."""
    found = [label for label, hit in (("-inf", low == -np.inf), ("+inf", high == np.inf)) if hit]
    in_range = np.isfinite(low) and np.isfinite(high) and max(-low, high) <= _LARGEST_RANGE
    if np.isnan(low) or np.isnan(high) or in_range:  # flagged although in range: NaN among the values
        found.append("NaN")
    if not found:
        return f"values up to {max(abs(low), abs(high)):.3g}, beyond the float32 range of a power-of-two grid"
    return " and ".join(found) + " values"


def non_finite_message(
    names: Sequence[str], lows: np.ndarray, highs: np.ndarray, batch: int, where: str | None = None
) -> str:
    """The error for a batch on which the layers ``names`` produced non-finite values."""
    shown = [
        f"{n!r} ({describe_values(float(lo), float(hi))})"
        for n, lo, hi in zip(names, lows, highs, strict=True)
    ]
    listing = ", ".join(shown[:SHOWN]) + (f" and {len(shown) - SHOWN} more" if len(shown) > SHOWN else "")
    first = f" They first arise at {where}." if where else ""
    return (
        "The float model produces values no grid can hold (NaN, infinite, or beyond +-1.7e38) on representative "
        f"data batch {batch}, at the outputs of layer(s) {listing}.{first} Quantization needs finite ranges. "
        "Clip the values (keras.ops.clip or a bounded activation such as ReLU6), change the activation that "
        "overflows (log of zero, exponential of large inputs), or keep that layer float "
        "(enable_activation_quantization=False for its operator set in the target platform capabilities); also "
        "check the data is scaled as the model expects."
    )
