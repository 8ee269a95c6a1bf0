"""Representative (calibration) data in any of the forms users bring, as validated numpy batches.

Accepted sources:
- a zero-argument callable returning an iterable of batches (MCT style: ``yield [x_batch]``);
- a ``tf.data.Dataset`` (elements: a tensor, a tuple/list with one tensor per input, a dict by input name,
  or ``(x, y)`` / ``(x, y, sample_weight)`` pairs; unbatched datasets are batched);
- numpy arrays: one array, a list/tuple with one array per input, or a dict by input name.
A batch may be a list/tuple (one array per input), a bare array (single-input models) or a dict.

Bounds: ``max_batches`` (``CoreConfig.n_iter``) caps the batches used. A source whose length is not known in
advance (a generator, an iterator, a ``tf.data.Dataset`` of infinite or unknown cardinality) is otherwise cut
after ``DEFAULT_MAX_SAMPLES`` samples, with a warning if it had not ended. What is read is kept in memory (up to
``replay.CACHE_BYTES``) and replayed by later passes, so the source is read once.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kerasq.data.profile import DataProfile
from kerasq.data.replay import ReplayCache
from kerasq.errors import ConfigError, DataError, DataTypeError

DEFAULT_MAX_SAMPLES = 4096  # samples read from a source of unknown length unless n_iter says otherwise

logger = logging.getLogger(__name__)

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


def _is_arrays(source: Any) -> bool:
    """One array, a list/tuple of arrays (one per input) or a dict of arrays: data already in memory."""
    return (
        _is_array(source)
        or isinstance(source, dict)
        or (isinstance(source, (list, tuple)) and bool(source) and all(_is_array(s) for s in source))
    )


def _length_known(source: Any) -> bool:
    """Whether the source says how much data it holds before it is read (so it needs no default bound)."""
    if _is_arrays(source):
        return True
    if _is_dataset(source):
        return int(source.cardinality()) >= 0  # INFINITE (-1) and UNKNOWN (-2) are negative
    return isinstance(source, Sized) and not callable(source)


def _planned_batches(source: Any, batch_size: int, max_batches: int | None) -> int | None:
    """The batches a read of ``source`` yields, when its form says so before reading (arrays in memory, a list
    of batches); None otherwise. A hint for how to run a pass: a read may still find fewer (empty batches)."""
    if _is_arrays(source):
        first = next(iter(source.values())) if isinstance(source, dict) else source
        first = first[0] if isinstance(first, (list, tuple)) else first
        count = -(-int(np.shape(first)[0]) // batch_size) if np.ndim(first) else None
    elif isinstance(source, Sized) and not callable(source) and not _is_dataset(source):
        count = len(source)
    else:
        return None
    return count if max_batches is None or count is None else min(count, max_batches)


def _check_count(name: str, value: Any, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        none = " or None" if allow_none else ""
        raise ConfigError(f"{name} must be a positive integer{none}, got {value!r}.")


_END = object()


class RepresentativeData:
    """Re-iterable, validated view of calibration data: each item is a list of arrays, one per input.

    ``warnings`` collects findings about the data (a degenerate input, a source cut at the default bound, fewer
    samples than a setting asks for); each is also logged (logger ``kerasq.data.representative``).
    """

    def __init__(
        self,
        source: Any,
        input_specs: Sequence[InputSpec],
        *,
        batch_size: int = 32,
        max_batches: int | None = None,
        default_limit: int | None = DEFAULT_MAX_SAMPLES,
    ) -> None:
        """``max_batches``: use at most this many batches (``CoreConfig.n_iter``). ``default_limit``: samples read
        from a source of unknown length when ``max_batches`` is not given (None: no bound)."""
        _check_count("batch_size", batch_size, allow_none=False)
        _check_count("max_batches (CoreConfig.n_iter)", max_batches, allow_none=True)
        _check_count("default_limit", default_limit, allow_none=True)
        self.specs = list(input_specs)
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.warnings: list[str] = []
        self._one_pass = inspect.isgenerator(source) or isinstance(source, Iterator)
        self._make_iterable = self._factory(source)
        self._limit = None if max_batches is not None or _length_known(source) else default_limit
        self._counts: tuple[int, int] | None = None  # (batches, samples) of a complete read
        self._planned = _planned_batches(source, batch_size, max_batches)
        self._cache = None if _is_arrays(source) else ReplayCache(self._read)
        self._first: list[np.ndarray] | None = None
        if not self._one_pass:  # validate eagerly, unless looking would use up a one-shot generator
            self.first_batch()

    # -- source handling -------------------------------------------------------------------------------------
    def _factory(self, source: Any) -> Callable[[], Iterable[Any]]:
        if source is None or isinstance(source, (str, bytes, int, float)):
            raise DataTypeError(f"Unsupported representative data {type(source).__name__}: pass {_FORMS}.")
        if _is_dataset(source):
            return lambda: self._dataset_batches(source)
        if _is_arrays(source):
            arrays = self._arrays_per_input(source, where="representative data")
            return lambda: self._slice(arrays)
        if inspect.isgenerator(source) or isinstance(source, Iterator):
            return self._one_shot(source)
        if callable(source):
            return lambda: self._call(source)
        if isinstance(source, Iterable):
            return lambda: iter(source)
        raise DataTypeError(f"Unsupported representative data {type(source).__name__}: pass {_FORMS}.")

    def _call(self, fn: Callable[[], Any]) -> Iterable[Any]:
        try:
            result = fn()
        except TypeError as err:
            raise DataTypeError(
                f"Calling the representative data function with no arguments failed ({err}); it must take no "
                "arguments and return an iterable of batches."
            ) from err
        if _is_dataset(result):
            return self._dataset_batches(result)
        if not isinstance(result, Iterable):
            raise DataTypeError(
                f"The representative data function returned {type(result).__name__}, not an iterable of batches; "
                "make it a generator (`yield [batch]`) or return a list of batches."
            )
        return result

    def _one_shot(self, iterator: Iterator[Any]) -> Callable[[], Iterable[Any]]:
        state = {"used": False}

        def make() -> Iterable[Any]:
            if state["used"]:
                raise DataError(
                    "The representative data is a generator object, which can be iterated only once, and it holds "
                    "more than kerasq keeps in memory for its later passes. Pass the generator function itself (a "
                    "zero-argument callable) instead."
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
                raise DataError(f"{where}: dict has keys {sorted(batch)} but the model's inputs are "
                                 f"{[s.name for s in self.specs]} (missing {missing}). Key each array by the name "
                                 "of the model input it feeds, or pass a list in the order of model.inputs.")  # fmt: skip
            items = [batch[s.name] for s in self.specs]
        elif isinstance(batch, (list, tuple)):
            items = list(batch)
        else:
            items = [batch]
        if len(items) != len(self.specs):
            raise DataError(
                f"{where}: got {len(items)} arrays but the model has {len(self.specs)} inputs "
                f"{[s.name for s in self.specs]}; give one array per input, in order."
            )
        return [self._to_array(item, spec, where) for item, spec in zip(items, self.specs, strict=True)]

    @staticmethod
    def _to_array(item: Any, spec: InputSpec, where: str) -> np.ndarray:
        array = np.asarray(item.numpy() if hasattr(item, "numpy") else item)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataTypeError(
                f"{where}: input {spec.name!r} has non-numeric dtype {array.dtype}; pass numbers."
            )
        if np.issubdtype(array.dtype, np.complexfloating):
            raise DataTypeError(
                f"{where}: input {spec.name!r} has complex dtype {array.dtype}, which the model cannot read; pass "
                "real values (e.g. np.abs(x) or np.real(x), whichever the model was trained on)."
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
                raise DataError(
                    f"{where}: input {spec.name!r} expects per-sample shape {shown} (batch first), got an array "
                    f"of shape {array.shape}; reshape the data or check the input order."
                )
            array = array.astype(spec.dtype, copy=False)
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise DataError(
                    f"{where}: input {spec.name!r} contains NaN/Inf values; clean or clip the data."
                )
            out.append(array)
        sizes = {len(a) for a in out}
        if len(sizes) > 1:
            raise DataError(
                f"{where}: inputs have different batch sizes {[len(a) for a in out]}; give every input the same "
                "number of samples."
            )
        return out

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        return iter(self._cache) if self._cache is not None else self._read()

    def _read(self) -> Iterator[list[np.ndarray]]:
        """One read of the source: validated, non-empty batches up to the bounds; a complete read is profiled."""
        profile = DataProfile([s.name for s in self.specs])
        source = iter(self._make_iterable())
        for index, batch in enumerate(source):
            arrays = self._validate(
                self._arrays_per_input(batch, f"representative data batch {index}"), index
            )
            if len(arrays[0]) == 0:
                continue
            room = None if self._limit is None else self._limit - profile.samples
            cut = room is not None and len(arrays[0]) > room
            if cut:
                arrays = [a[:room] for a in arrays]
            profile.add(arrays)
            yield arrays
            if self.max_batches is not None and profile.batches >= self.max_batches:
                break
            if self._limit is not None and profile.samples >= self._limit:  # room is not None
                if cut or next(source, _END) is not _END:
                    self._warn(self._cut_message(profile))
                break
        if profile.samples == 0:
            raise DataError(
                "The representative data produced no samples; pass at least one non-empty batch "
                "(a few hundred samples from the training set is typical)."
            )
        if self._counts is None:
            self._counts = (profile.batches, profile.samples)
            for message in profile.warnings():
                self._warn(message)

    def _cut_message(self, profile: DataProfile) -> str:
        return (
            f"The representative data had not ended after {self._limit} samples ({profile.batches} batches), "
            "kerasq's bound for a generator or dataset of unknown length, so only those were used. Set "
            "CoreConfig(n_iter=...) to choose how many batches are read (MCT's n_iter), or make the data end "
            "(e.g. dataset.take(n) instead of an endless repeat())."
        )

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning(message)

    @property
    def reiterable(self) -> bool:
        """False for a one-shot generator or iterator that was not (or could not be) kept in memory."""
        return not self._one_pass or (self._cache is not None and self._cache.complete)

    def expected_batches(self) -> int | None:
        """How many batches a pass yields: counted once the data was read through, else what its form says
        (arrays in memory, a list of batches), else None (a generator, a dataset)."""
        return self._counts[0] if self._counts is not None else self._planned

    def first_batch(self) -> list[np.ndarray]:
        if self._first is None:
            self._first = next(iter(self))
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

    def _complete_counts(self) -> tuple[int, int]:
        if self._counts is None:
            for _ in self:
                pass
        assert self._counts is not None, "a complete read records the counts"
        return self._counts

    def num_samples(self) -> int:
        return self._complete_counts()[1]

    def num_batches(self) -> int:
        return self._complete_counts()[0]

    def warn_if_fewer(self, needed: int, setting: str, purpose: str) -> None:
        """A warning when the data holds fewer than ``needed`` samples, which ``setting`` asks for ``purpose``."""
        have = self.num_samples()
        if have < needed:
            self._warn(
                f"{setting}={needed} asks for {needed} representative samples for {purpose}, but the data has only "
                f"{have}, so {purpose} uses those {have}. Pass at least {needed} samples or lower {setting}."
            )
