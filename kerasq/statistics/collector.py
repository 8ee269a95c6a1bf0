"""One streaming pass over the representative data: a histogram and min/max for every observed tensor.

A probe model returns the tensors to observe; a compiled step computes each tensor's batch histogram on
the running power-of-two range inside TensorFlow, so only small count vectors come back to numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasq.data import RepresentativeData
from kerasq.progress import progress
from kerasq.statistics.histogram import TensorStats, merge_batch

_TINY = 2.0**-24


def _make_step(probe: keras.Model, num_bins: int):
    @tf.function(reduce_retracing=True)
    def step(inputs, ranges):
        outputs = probe(inputs, training=False)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        counts, ranges_out, lows, highs, finite, sizes = [], [], [], [], [], []
        for i, tensor in enumerate(outputs):
            flat = tf.reshape(tf.cast(tensor, tf.float32), [-1])
            lo, hi = tf.reduce_min(flat), tf.reduce_max(flat)
            amax = tf.maximum(tf.maximum(tf.abs(lo), tf.abs(hi)), _TINY)
            needed = tf.pow(2.0, tf.math.ceil(tf.math.log(amax) / tf.math.log(2.0)))
            needed = tf.where(needed < amax, needed * 2.0, needed)  # guard log rounding
            hist_range = tf.maximum(ranges[i], needed)
            counts.append(tf.histogram_fixed_width(flat, tf.stack([-hist_range, hist_range]), nbins=num_bins))
            ranges_out.append(hist_range)
            lows.append(lo)
            highs.append(hi)
            finite.append(tf.reduce_all(tf.math.is_finite(flat)))
            sizes.append(tf.size(flat))
        # Stacked, so each batch costs six device-to-host copies whatever the number of tensors.
        return (tf.stack(counts), tf.stack(ranges_out), tf.stack(lows), tf.stack(highs), tf.stack(finite),
                tf.stack(sizes))  # fmt: skip

    return step


def collect_statistics(
    probe: keras.Model, names: Sequence[str], data: RepresentativeData, num_bins: int = 4096
) -> list[TensorStats]:
    """Run ``probe`` (outputs = tensors to observe, named ``names``) over ``data``; one ``TensorStats`` each."""
    step = _make_step(probe, num_bins)
    stats: list[TensorStats | None] = [None] * len(names)
    ranges = np.zeros(len(names), np.float32)
    for batch in progress(data, desc="kerasq: statistics"):
        results = [
            r.numpy() for r in step([tf.convert_to_tensor(b) for b in batch], tf.convert_to_tensor(ranges))
        ]
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
