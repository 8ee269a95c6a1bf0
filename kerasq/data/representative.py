"""Representative (calibration) data in any of the forms users bring, as validated numpy batches.

Accepted sources:
- a zero-argument callable returning an iterable of batches (MCT style: ``yield [x_batch]``);
- a ``tf.data.Dataset`` (elements: a tensor, a tuple/list with one tensor per input, a dict by input name,
  or ``(x, y)`` / ``(x, y, sample_weight)`` pairs; unbatched datasets are batched);
- numpy arrays: one array, a list/tuple with one array per input, or a dict by input name.
A batch may be a list/tuple (one array per input), a bare array (single-input models) or a dict.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

_FORMS = (
    "a zero-argument callable returning an iterable of batches (each a list with one array per model input), "
    "a tf.data.Dataset, or numpy arrays (one array, a list with one array per input, or a dict by input name)"
)


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, per-sample shape (no batch dim; None = any size) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


def input_specs_from_model(model: keras.Model) -> list[InputSpec]:
    """Input specs of a Functional/Sequential model, in ``model.inputs`` order."""
    return [
        InputSpec(name=(t.name or f"input_{i}").split(":")[0], shape=tuple(t.shape[1:]), dtype=str(t.dtype))
        for i, t in enumerate(model.inputs)
    ]


def _is_dataset(obj: Any) -> bool:
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover - TensorFlow is the backend kerasq needs
        return False
    return isinstance(obj, tf.data.Dataset)


def _is_array(obj: Any) -> bool:
    return isinstance(obj, np.ndarray) or (
        hasattr(obj, "shape") and hasattr(obj, "dtype") and not isinstance(obj, dict)
    )


class RepresentativeData:
    """Re-iterable, validated view of calibration data: each item is a list of arrays, one per input."""

    def __init__(
        self,
        source: Any,
        input_specs: Sequence[InputSpec],
        *,
        batch_size: int = 32,
        max_batches: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                        or max_batches < 1):  # fmt: skip
            raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}.")
        self.specs = list(input_specs)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self._make_iterable = self._factory(source)
        self._num_samples: int | None = None
        self._first: list[np.ndarray] | None = None
        self._one_pass = inspect.isgenerator(source) or isinstance(source, Iterator)
        if not self._one_pass:  # validate eagerly, unless looking would use up a one-shot generator
            self.first_batch()

    # -- source handling -------------------------------------------------------------------------------------
    def _factory(self, source: Any) -> Callable[[], Iterable[Any]]:
        if source is None or isinstance(source, (str, bytes, int, float)):
            raise TypeError(f"Unsupported representative data {type(source).__name__}: pass {_FORMS}.")
        if _is_dataset(source):
            return lambda: self._dataset_batches(source)
        if (
            _is_array(source)
            or isinstance(source, dict)
            or (isinstance(source, (list, tuple)) and source and all(_is_array(s) for s in source))
        ):
            arrays = self._arrays_per_input(source, where="representative data")
            return lambda: self._slice(arrays)
        if inspect.isgenerator(source) or isinstance(source, Iterator):
            return self._one_shot(source)
        if callable(source):
            return lambda: self._call(source)
        if isinstance(source, Iterable):
            return lambda: iter(source)
        raise TypeError(f"Unsupported representative data {type(source).__name__}: pass {_FORMS}.")

    def _call(self, fn: Callable[[], Any]) -> Iterable[Any]:
        try:
            result = fn()
        except TypeError as err:
            raise TypeError(
                f"Calling the representative data function with no arguments failed ({err}); it must take no "
                "arguments and return an iterable of batches."
            ) from err
        if _is_dataset(result):
            return self._dataset_batches(result)
        if not isinstance(result, Iterable):
            raise TypeError(
                f"The representative data function returned {type(result).__name__}, not an iterable of batches; "
                "make it a generator (`yield [batch]`) or return a list of batches."
            )
        return result

    def _one_shot(self, iterator: Iterator[Any]) -> Callable[[], Iterable[Any]]:
        state = {"used": False}

        def make() -> Iterable[Any]:
            if state["used"]:
                raise ValueError(
                    "The representative data is a generator object, which can be iterated only once, but kerasq "
                    "needs several passes. Pass the generator function itself (a zero-argument callable) instead."
                )
            state["used"] = True
            return iterator

        return make

    def _dataset_batches(self, dataset: Any) -> Iterator[Any]:
        spec = dataset.element_spec
        first_leaf = keras.tree.flatten(self._inputs_part(spec))[0]
        per_sample_rank = len(self.specs[0].shape)
        if first_leaf.shape.rank == per_sample_rank:
            dataset = dataset.batch(self.batch_size)
        for element in dataset:
            yield keras.tree.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                                           self._inputs_part(element))  # fmt: skip

    def _inputs_part(self, element: Any) -> Any:
        """Drop labels / sample weights from ``(x, y)`` style elements."""
        if isinstance(element, (tuple, list)) and len(element) in (2, 3):
            n = len(self.specs)
            if n == 1 or len(element) != n or isinstance(element[0], (tuple, list, dict)):
                return element[0]
        return element

    def _arrays_per_input(self, batch: Any, where: str) -> list[np.ndarray]:
        if isinstance(batch, dict):
            missing = [s.name for s in self.specs if s.name not in batch]
            if missing:
                raise ValueError(f"{where}: dict has keys {sorted(batch)} but the model's inputs are "
                                 f"{[s.name for s in self.specs]} (missing {missing}).")  # fmt: skip
            items = [batch[s.name] for s in self.specs]
        elif isinstance(batch, (list, tuple)):
            items = list(batch)
        else:
            items = [batch]
        if len(items) != len(self.specs):
            raise ValueError(
                f"{where}: got {len(items)} arrays but the model has {len(self.specs)} inputs "
                f"{[s.name for s in self.specs]}; give one array per input, in order."
            )
        return [self._to_array(item, spec, where) for item, spec in zip(items, self.specs, strict=True)]

    @staticmethod
    def _to_array(item: Any, spec: InputSpec, where: str) -> np.ndarray:
        array = np.asarray(item.numpy() if hasattr(item, "numpy") else item)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise TypeError(
                f"{where}: input {spec.name!r} has non-numeric dtype {array.dtype}; pass numbers."
            )
        return array

    def _slice(self, arrays: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
        n = len(arrays[0])
        for i in range(0, n, self.batch_size):
            yield [a[i : i + self.batch_size] for a in arrays]

    # -- iteration and validation -------------------------------------------------------------------------
    def _validate(self, arrays: list[np.ndarray], index: int) -> list[np.ndarray]:
        where = f"representative data batch {index}"
        out = []
        for array, spec in zip(arrays, self.specs, strict=True):
            sample_shape = tuple(array.shape[1:])
            expected = spec.shape
            if array.ndim != len(expected) + 1 or any(
                e is not None and e != g for e, g in zip(expected, sample_shape, strict=False)
            ):
                shown = tuple("?" if e is None else e for e in expected)
                raise ValueError(
                    f"{where}: input {spec.name!r} expects per-sample shape {shown} (batch first), got an array "
                    f"of shape {array.shape}; reshape the data or check the input order."
                )
            array = array.astype(spec.dtype, copy=False)
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(
                    f"{where}: input {spec.name!r} contains NaN/Inf values; clean or clip the data."
                )
            out.append(array)
        sizes = {len(a) for a in out}
        if len(sizes) > 1:
            raise ValueError(f"{where}: inputs have different batch sizes {[len(a) for a in out]}.")
        return out

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        produced = 0
        for index, batch in enumerate(self._make_iterable()):
            if self.max_batches is not None and index >= self.max_batches:
                break
            arrays = self._validate(
                self._arrays_per_input(batch, f"representative data batch {index}"), index
            )
            if len(arrays[0]) == 0:
                continue
            produced += len(arrays[0])
            yield arrays
        if produced == 0:
            raise ValueError(
                "The representative data produced no samples; pass at least one non-empty batch "
                "(a few hundred samples from the training set is typical)."
            )

    @property
    def reiterable(self) -> bool:
        """False for a one-shot generator or iterator: it can be read only once."""
        return not self._one_pass

    def first_batch(self) -> list[np.ndarray]:
        if self._first is None:
            for batch in self:
                self._first = batch
                break
        return self._first

    def take(self, n: int) -> list[np.ndarray]:
        """The first ``n`` samples (fewer if the data has fewer), one array per input."""
        parts: list[list[np.ndarray]] = []
        count = 0
        for batch in self:
            parts.append([a[: n - count] for a in batch])
            count += len(parts[-1][0])
            if count >= n:
                break
        return [np.concatenate([p[i] for p in parts]) for i in range(len(self.specs))]

    def num_samples(self) -> int:
        if self._num_samples is None:
            self._num_samples = sum(len(b[0]) for b in self)
        return self._num_samples
