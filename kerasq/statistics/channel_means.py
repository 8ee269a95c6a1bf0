"""Mean of tensors over the samples of the representative data (inputs of weighted layers, for bias correction)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasq.data.representative import RepresentativeData
from kerasq.statistics.batch_runner import BatchRunner, as_tensors, call_model, input_signature


def collect_mean_maps(probe: keras.Model, data: RepresentativeData) -> list[np.ndarray]:
    """Mean of each ``probe`` output over the samples of ``data`` (the batch axis only: one value per position
    and channel, so border effects of padded convolutions can be computed exactly)."""

    def step(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outputs = call_model(probe, inputs)
        return [tf.reduce_mean(tf.cast(o, tf.float64), axis=0) for o in outputs]

    signature = input_signature(probe)
    run = BatchRunner(step, [signature])
    sums: list[np.ndarray] | None = None
    count = 0
    for batch in data:
        n = len(batch[0])
        means = [m.numpy() * n for m in run(as_tensors(batch, signature))]
        sums = means if sums is None else [s + m for s, m in zip(sums, means, strict=True)]
        count += n
    return [s / count for s in sums]
