"""One streaming pass over the representative data: a histogram and min/max for every observed tensor.

A probe model returns the tensors to observe; a step computes each tensor's batch histogram on the running
power-of-two range inside TensorFlow, so only small count vectors come back to numpy. The step runs eagerly
for the first batches and compiled after (``batch_runner``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasq.data import RepresentativeData
from kerasq.progress import progress
from kerasq.statistics.batch_runner import BatchRunner, as_tensors, call_model, input_signature
from kerasq.statistics.histogram import TensorStats, merge_batch

_TINY = 2.0**-24


def _make_step(probe: keras.Model, num_bins: int) -> Callable[..., tuple]:
    """The per-batch statistics of every ``probe`` output. Ranges are computed for all tensors at once, so
    each tensor adds only its own reductions and histogram to the graph (a few ops, not two dozen)."""

    def step(inputs: list[tf.Tensor], ranges: tf.Tensor) -> tuple:
        outputs = [tf.cast(t, tf.float32) for t in call_model(probe, inputs)]
        lows = tf.stack([tf.reduce_min(t) for t in outputs])
        highs = tf.stack([tf.reduce_max(t) for t in outputs])
        finite = tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in outputs])
        sizes = tf.stack([tf.size(t) for t in outputs])
        amax = tf.maximum(tf.maximum(tf.abs(lows), tf.abs(highs)), _TINY)
        needed = tf.pow(2.0, tf.math.ceil(tf.math.log(amax) / tf.math.log(2.0)))
        needed = tf.where(needed < amax, needed * 2.0, needed)  # guard log rounding
        hist_range = tf.maximum(ranges, needed)
        bounds = tf.stack([-hist_range, hist_range], axis=1)
        counts = tf.stack(
            [tf.histogram_fixed_width(t, bounds[i], nbins=num_bins) for i, t in enumerate(outputs)]
        )
        # Stacked, so each batch costs six device-to-host copies whatever the number of tensors.
        return counts, hist_range, lows, highs, finite, sizes

    return step


def collect_statistics(
    probe: keras.Model, names: Sequence[str], data: RepresentativeData, num_bins: int = 4096
) -> list[TensorStats]:
    """Run ``probe`` (outputs = tensors to observe, named ``names``) over ``data``; one ``TensorStats`` each."""
    signature = input_signature(probe)
    step = BatchRunner(_make_step(probe, num_bins), [signature, tf.TensorSpec((len(names),), tf.float32)])
    stats: list[TensorStats | None] = [None] * len(names)
    ranges = np.zeros(len(names), np.float32)
    for batch in progress(data, desc="kerasq: statistics"):
        results = [r.numpy() for r in step(as_tensors(batch, signature), tf.convert_to_tensor(ranges))]
        for i, (counts, hist_range, lo, hi, finite, size) in enumerate(zip(*results, strict=True)):
            if not finite:
                raise ValueError(
                    f"Tensor {names[i]!r} produced NaN/Inf on the representative data; check the float model "
                    "on this data (overflowing activations, log of zero, ...) before quantizing."
                )
            stats[i] = merge_batch(stats[i], counts, float(hist_range), float(lo), float(hi), int(size))
            ranges[i] = stats[i].hist_range
    if any(s is None for s in stats):
        raise ValueError("representative data produced no batches; statistics cannot be collected.")
    return stats
