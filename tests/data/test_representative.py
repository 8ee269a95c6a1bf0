"""Representative data: every accepted form, re-iteration, batching, and clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.data import InputSpec, RepresentativeData, input_specs_from_model, replay
from kerasq.errors import DataError

ONE = [InputSpec("img", (8, 8, 3), "float32")]
TWO = [InputSpec("img", (8, 8, 3), "float32"), InputSpec("vec", (5,), "float32")]
RNG = np.random.default_rng(0)
X = RNG.uniform(0, 1, (70, 8, 8, 3)).astype("float32")
V = RNG.normal(size=(70, 5)).astype("float32")


def _concat(data: RepresentativeData) -> list[np.ndarray]:
    batches = list(data)
    return [np.concatenate([b[i] for b in batches]) for i in range(len(batches[0]))]


def _mct_gen():
    for i in range(0, 70, 20):
        yield [X[i : i + 20]]


@pytest.mark.parametrize(
    "source",
    [
        _mct_gen,
        lambda: (X[i : i + 16] for i in range(0, 70, 16)),  # bare arrays
        lambda: [{"img": X[:35]}, {"img": X[35:]}],  # dict batches
        tf.data.Dataset.from_tensor_slices(X).batch(16),
        tf.data.Dataset.from_tensor_slices(X),  # unbatched
        tf.data.Dataset.from_tensor_slices((X, np.arange(70))).batch(10),  # (x, y)
        X,
        [X],
        {"img": X},
    ],
    ids=["mct", "bare", "dicts", "dataset", "unbatched", "xy", "numpy", "numpy-list", "numpy-dict"],
)
def test_single_input_forms(source):
    data = RepresentativeData(source, ONE, batch_size=32)
    np.testing.assert_array_equal(_concat(data)[0], X)
    np.testing.assert_array_equal(_concat(data)[0], X)  # re-iterable
    assert data.num_samples() == 70


@pytest.mark.parametrize(
    "source",
    [
        lambda: ([X[i : i + 30], V[i : i + 30]] for i in range(0, 70, 30)),
        tf.data.Dataset.from_tensor_slices((X, V)).batch(8),
        tf.data.Dataset.from_tensor_slices(((X, V), np.zeros(70))).batch(8),
        tf.data.Dataset.from_tensor_slices({"vec": V, "img": X}).batch(8),
        [X, V],
        {"vec": V, "img": X},
    ],
    ids=["gen", "dataset", "dataset-xy", "dataset-dict", "numpy", "numpy-dict"],
)
def test_two_input_forms(source):
    img, vec = _concat(RepresentativeData(source, TWO))
    np.testing.assert_array_equal(img, X)
    np.testing.assert_array_equal(vec, V)


def test_numpy_batching_and_max_batches():
    sizes = [len(b[0]) for b in RepresentativeData(X, ONE, batch_size=32)]
    assert sizes == [32, 32, 6]
    assert len(list(RepresentativeData(X, ONE, batch_size=10, max_batches=3))) == 3


@pytest.mark.parametrize(
    "source, specs, kwargs",
    [
        (X, ONE, {}),  # 70 samples: 32 + 32 + 6
        ([X], ONE, {}),
        ({"img": X}, ONE, {}),
        ([X, V], TWO, {}),
        (X, ONE, {"max_batches": 2}),
        (X[:64], ONE, {}),  # no short last batch
        ([[X[:35]], [X[35:]]], ONE, {}),  # a list of batches
    ],
    ids=["numpy", "numpy-list", "numpy-dict", "two-inputs", "max-batches", "exact", "batch-list"],
)
def test_expected_batches_are_known_before_reading_data_in_memory(source, specs, kwargs):
    data = RepresentativeData(source, specs, batch_size=32, **kwargs)
    assert data.expected_batches() == len(list(data))


def test_expected_batches_of_a_generator_are_known_once_read_through():
    data = RepresentativeData(_mct_gen, ONE)
    assert data.expected_batches() is None
    list(data)
    assert data.expected_batches() == 4


def test_integer_images_are_cast_not_rescaled():
    pixels = (X * 255).astype("uint8")
    (batch,) = RepresentativeData(pixels, ONE).first_batch()
    assert batch.dtype == np.float32 and batch.max() > 200


def test_generator_object_is_replayed_from_memory():
    data = RepresentativeData(_mct_gen(), ONE)
    assert not data.reiterable  # not read yet
    np.testing.assert_array_equal(_concat(data)[0], X)
    np.testing.assert_array_equal(_concat(data)[0], X)
    assert data.reiterable


def test_generator_object_too_large_to_keep_allows_one_pass_only(monkeypatch):
    monkeypatch.setattr(replay, "CACHE_BYTES", X[:20].nbytes)  # room for one batch of four
    data = RepresentativeData(_mct_gen(), ONE)
    assert len(list(data)) == 4
    assert not data.reiterable
    with pytest.raises(DataError, match="only once.*zero-argument callable"):
        list(data)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 90), st.integers(1, 40))
def test_batches_reassemble_the_source(n, batch_size):
    x = np.arange(n * 5, dtype=np.float32).reshape(n, 5)
    data = RepresentativeData(x, [InputSpec("v", (5,), "float32")], batch_size=batch_size)
    np.testing.assert_array_equal(_concat(data)[0], x)
    assert all(len(b[0]) <= batch_size for b in data)


def test_input_specs_from_model():
    a, b = keras.Input((8, 8, 3), name="img"), keras.Input((5,), name="vec")
    out = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(a), b])
    specs = input_specs_from_model(keras.Model([a, b], out))
    assert specs == [InputSpec("img", (8, 8, 3), "float32"), InputSpec("vec", (5,), "float32")]


@pytest.mark.parametrize(
    ("source", "specs", "error", "match"),
    [
        ("data.npz", ONE, TypeError, "Unsupported representative data str"),
        (42, ONE, TypeError, "Unsupported"),
        (np.zeros((0, 8, 8, 3)), ONE, ValueError, "no samples"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 3))).batch(2), ONE, ValueError, "no samples"),
        (lambda: [], ONE, ValueError, "no samples"),
        (np.zeros((4, 9, 9, 3)), ONE, ValueError, r"input 'img' expects per-sample shape \(8, 8, 3\)"),
        (lambda: [[X[:4]]], TWO, ValueError, "got 1 arrays but the model has 2 inputs"),
        ([X[:4], V[:3]], TWO, ValueError, "different batch sizes"),
        ({"img": X}, TWO, ValueError, r"missing \['vec'\]"),
        (np.array([["a"] * 5] * 2), [InputSpec("v", (5,), "float32")], TypeError, "non-numeric"),
        (lambda x: x, ONE, TypeError, "no arguments"),
    ],
)
def test_errors(source, specs, error, match):
    with pytest.raises(error, match=match):
        list(RepresentativeData(source, specs))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_named_with_input_and_batch(bad):
    x = X.copy()
    x[40, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="batch 1: input 'img' contains NaN/Inf"):
        list(RepresentativeData(x, ONE, batch_size=32))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"batch_size": 0}, "batch_size"), ({"max_batches": 0}, "max_batches")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RepresentativeData(X, ONE, **kwargs)
