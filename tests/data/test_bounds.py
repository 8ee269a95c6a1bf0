"""Calibration data is bounded (n_iter, a default bound for endless sources) and read once."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasq
from kerasq.core import CoreConfig
from kerasq.data import InputSpec, RepresentativeData
from kerasq.errors import ConfigError

DEFAULT_MAX_SAMPLES = 4096  # kerasq.data.representative.DEFAULT_MAX_SAMPLES, as documented

ONE = [InputSpec("img", (4, 4, 3), "float32")]
X = np.random.default_rng(0).uniform(0, 1, (64, 4, 4, 3)).astype("float32")


class Endless:
    """A generator function that never ends; it fails loudly instead of hanging once far past any bound."""

    def __init__(self, batch: int = 16) -> None:
        self.batch, self.drawn = batch, 0

    def __call__(self):
        while True:
            if self.drawn >= 3 * DEFAULT_MAX_SAMPLES:
                raise AssertionError(f"{self.drawn} samples drawn: the data was not bounded")
            self.drawn += self.batch
            yield [X[: self.batch]]


class Counting:
    """A finite generator function that counts the batches it yields over all its calls."""

    def __init__(self) -> None:
        self.yielded = 0

    def __call__(self):
        for i in range(0, len(X), 16):
            self.yielded += 1
            yield [X[i : i + 16]]


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((4, 4, 3), name="img")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    return keras.Model(image, keras.layers.Dense(2)(keras.layers.Flatten()(x)))


def test_endless_generator_stops_at_the_default_bound_with_a_warning(caplog):
    source = Endless()
    data = RepresentativeData(source, ONE)
    assert data.num_samples() == DEFAULT_MAX_SAMPLES
    assert data.num_batches() == 256
    assert source.drawn == DEFAULT_MAX_SAMPLES + 16  # one batch more, to see that it had not ended
    (message,) = data.warnings
    assert "had not ended after 4096 samples (256 batches)" in message and "CoreConfig(n_iter=" in message
    assert message in caplog.text  # logged too


def test_repeated_dataset_stops_at_the_default_bound():
    drawn = [0]

    def guard(batch: tf.Tensor) -> tf.Tensor:  # fail, not hang, when unbounded
        drawn[0] += 1
        assert drawn[0] < 3 * DEFAULT_MAX_SAMPLES // 10, "the repeated dataset was not bounded"
        return batch

    endless = tf.data.Dataset.from_tensor_slices(X).batch(10).repeat()
    endless = endless.map(lambda b: tf.ensure_shape(tf.py_function(guard, [b], tf.float32), (None, 4, 4, 3)))
    assert endless.cardinality() == tf.data.INFINITE_CARDINALITY
    data = RepresentativeData(endless, ONE)
    assert data.num_samples() == 4096  # the last batch is cut to the bound
    assert "had not ended after 4096 samples" in data.warnings[0]


def test_n_iter_bounds_batches_without_a_warning():
    source = Endless()
    data = RepresentativeData(source, ONE, max_batches=5)
    assert [len(b[0]) for b in data] == [16] * 5
    assert source.drawn == 80 and data.warnings == []


def test_sources_of_known_length_are_not_cut():
    big = np.zeros((DEFAULT_MAX_SAMPLES + 100, 4, 4, 3), "float32") + X[0]
    assert RepresentativeData(big, ONE).num_samples() == DEFAULT_MAX_SAMPLES + 100
    dataset = tf.data.Dataset.from_tensor_slices(big).batch(512)
    assert RepresentativeData(dataset, ONE).num_samples() == DEFAULT_MAX_SAMPLES + 100


def test_a_generator_that_ends_at_the_bound_gets_no_warning():
    n = DEFAULT_MAX_SAMPLES // 16
    data = RepresentativeData(lambda: ([X[:16]] for _ in range(n)), ONE)
    assert data.num_samples() == DEFAULT_MAX_SAMPLES and data.warnings == []


def test_ptq_reads_an_endless_generator_up_to_n_iter():
    source = Endless(batch=8)
    _, info = kerasq.ptq.keras_post_training_quantization(_model(), source, core_config=CoreConfig(n_iter=3))
    assert source.drawn == 24
    assert not any("had not ended" in w for w in info.warnings)


def test_ptq_reads_a_finite_generator_once():
    source = Counting()  # statistics and bias correction (on by default) both need the data
    kerasq.ptq.keras_post_training_quantization(_model(), source)
    assert source.yielded == 4


def test_the_documented_default_bound():
    from kerasq.data import representative

    assert representative.DEFAULT_MAX_SAMPLES == DEFAULT_MAX_SAMPLES
    assert "cut after 4096 samples" in CoreConfig.__doc__


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "10"])
def test_core_config_n_iter_is_validated(bad):
    with pytest.raises(ConfigError, match="CoreConfig.n_iter must be a positive integer"):
        CoreConfig(n_iter=bad)
