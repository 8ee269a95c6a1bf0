"""Run a per-batch step eagerly for the first batches, then through one compiled ``tf.function``.

Tracing a step around a probe of a large network (NASNetMobile: ~600 observed tensors) costs as much as
a dozen eager batches: the Python of every layer and every statistic runs once to build a graph of tens of
thousands of ops, which TensorFlow then optimises. Calibration sets are often a few batches, where that
cost dominates PTQ. Like renting skis before buying, the runner calls the step eagerly for its first
``eager_batches`` batches and compiles it only once more keep coming; the compiled step takes any batch
size (batch dimension ``None``), so a short last batch does not trace it again. When the number of batches is
known in advance (arrays in memory, a list of batches) and exceeds ``eager_batches``, the trace is paid anyway,
so the runner compiles at the first batch: an eager batch costs several compiled ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

EAGER_BATCHES = 4


def input_signature(model: keras.Model) -> list[tf.TensorSpec]:
    """One spec per model input, any batch size."""
    return [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]


class BatchRunner:
    """``step(inputs, *extra)`` per batch: eager for the first ``eager_batches`` calls, compiled after."""

    def __init__(
        self,
        step: Callable[..., Any],
        signature: Sequence[Any],
        eager_batches: int | None = None,
        expected_calls: int | None = None,
    ) -> None:
        """``expected_calls``: how many batches will come, if known (more than ``eager_batches``: none eager)."""
        self._step = step
        self._signature = list(signature)
        self._eager_batches = EAGER_BATCHES if eager_batches is None else eager_batches
        if expected_calls is not None and expected_calls > self._eager_batches:
            self._eager_batches = 0
        self._compiled: Callable[..., Any] | None = None
        self.calls = 0

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls <= self._eager_batches:
            return self._step(*args)
        if self._compiled is None:
            self._compiled = tf.function(self._step, input_signature=self._signature, autograph=False)
        return self._compiled(*args)


def call_model(model: keras.Model, inputs: Sequence[tf.Tensor]) -> list[Any]:
    """``model``'s outputs (flat) on one batch: a single-input model takes its tensor, not a list of one."""
    return keras.tree.flatten(model(inputs if len(inputs) > 1 else inputs[0], training=False))


def as_tensors(batch: Sequence[Any], signature: Sequence[tf.TensorSpec]) -> list[tf.Tensor]:
    """The arrays of one batch as tensors of the model's input dtypes."""
    return [tf.convert_to_tensor(b, dtype=spec.dtype) for b, spec in zip(batch, signature, strict=True)]
