"""Statistics collection: eager for the first batches, one compiled step after, the same numbers either way."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from kerasq.data import RepresentativeData, input_specs_from_model
from kerasq.statistics import batch_runner, collect_statistics, observe
from kerasq.statistics.batch_runner import BatchRunner


def test_runner_is_eager_first_then_traces_once_for_every_batch_size():
    python_runs = []

    def step(inputs, offset):
        python_runs.append(1)  # once per eager call, once per trace
        return tf.reduce_sum(inputs[0], axis=0) + offset

    runner = BatchRunner(step, [[tf.TensorSpec((None, 3), tf.float32)], tf.TensorSpec((), tf.float32)], 2)
    sizes = [4, 4, 4, 4, 1, 3]  # the short batches must not trace again
    results = [runner([tf.ones((n, 3))], tf.constant(0.5)).numpy() for n in sizes]
    assert len(python_runs) == 3 and runner.compiled
    for n, result in zip(sizes, results, strict=True):
        np.testing.assert_array_equal(result, np.full(3, n + 0.5))


def test_runner_traces_at_the_first_batch_when_more_batches_than_eager_ones_are_expected():
    python_runs = []

    def step(inputs):
        python_runs.append(1)
        return tf.reduce_sum(inputs[0])

    signature = [[tf.TensorSpec((None, 3), tf.float32)]]
    many = BatchRunner(step, signature, 2, expected_calls=3)
    assert many([tf.ones((4, 3))]).numpy() == 12.0
    assert many.compiled and len(python_runs) == 1  # the trace, no eager call
    few = BatchRunner(step, signature, 2, expected_calls=2)
    few([tf.ones((4, 3))])
    few([tf.ones((4, 3))])
    assert not few.compiled and len(python_runs) == 3  # two eager calls, no trace


def _probe() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((6, 6, 2))
    a = layers.Conv2D(3, 3, padding="same")(image)
    b = layers.ReLU()(layers.Conv2D(4, 1)(a))
    return keras.Model(image, [a, b])


@pytest.fixture
def data():
    x = np.random.default_rng(0).normal(0, 2, (7 * 8 + 5, 6, 6, 2)).astype("float32")  # 8 batches, short last
    return x


def test_compiled_batches_give_the_eager_statistics(data, monkeypatch):
    probe = _probe()
    reps = RepresentativeData(data, input_specs_from_model(probe), batch_size=8)
    compiled = collect_statistics(probe, ["a", "b"], reps, num_bins=64)
    monkeypatch.setattr(batch_runner, "EAGER_BATCHES", 100)
    eager = collect_statistics(probe, ["a", "b"], reps, num_bins=64)
    a, b = probe.predict(data, verbose=0)
    for got, want, values in zip(compiled, eager, (a, b), strict=True):
        np.testing.assert_array_equal(got.counts, want.counts)
        assert (got.min, got.max, got.num_values) == (float(values.min()), float(values.max()), values.size)
        assert got.counts.sum() == values.size
    seen = observe(probe, ["a"], reps, num_bins=64)  # histogram of a, mean of b, in the same pass
    np.testing.assert_array_equal(seen.stats[0].counts, compiled[0].counts)
    np.testing.assert_allclose(seen.means[0], b.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert len(seen.means) == 1 and seen.means[0].shape == b.shape[1:]


def test_means_alone_need_no_observed_tensor(data):
    probe = _probe()
    reps = RepresentativeData(data, input_specs_from_model(probe), batch_size=8)
    seen = observe(probe, [], reps, num_bins=64)
    a, b = probe.predict(data, verbose=0)
    assert seen.stats == []
    for got, want in zip(seen.means, (a, b), strict=True):
        np.testing.assert_allclose(got, want.mean(axis=0), rtol=1e-5, atol=1e-6)
