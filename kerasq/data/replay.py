"""Keep the batches of one read of the calibration data, so later passes replay them instead of reading again.

PTQ reads its data several times (statistics, bias correction, Hessian scores, mixed precision, GPTQ epochs).
Reading a generator again repeats its work (decoding, augmenting) and a generator object cannot be read twice at
all. ``ReplayCache`` records what the first read yields, up to a memory budget; passes started while the first
is under way share it (each takes the recorded batches, then the next one from the source). Over the budget the
record is dropped and every later pass reads the source again, as if there were no cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import Enum
from itertools import islice
from typing import Literal

import numpy as np

CACHE_BYTES = 512 * 2**20  # batches kept in memory for later passes


class _Sentinel(Enum):
    END = 0


_END = _Sentinel.END


class ReplayCache:
    """Re-iterable view of ``read()`` (a function starting one read of the source), read once if it fits."""

    def __init__(self, read: Callable[[], Iterator[list[np.ndarray]]], budget: int | None = None) -> None:
        self._read = read
        self._budget = CACHE_BYTES if budget is None else budget
        self._batches: list[list[np.ndarray]] | None = []  # None once over the budget
        self._bytes = 0
        self._live: Iterator[list[np.ndarray]] | None = None
        self.complete = False  # every batch of the source is recorded

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        index = 0
        while True:
            if self._batches is None:  # over the budget: read the source, skipping what this pass already had
                yield from islice(self._read(), index, None)
                return
            if index < len(self._batches):
                yield self._batches[index]
                index += 1
                continue
            if self.complete:
                return
            batch = self._next()
            if batch is _END:
                return
            index += 1
            yield batch
            if self._batches is None and self._live is not None:  # this batch broke the budget: keep reading
                live, self._live = self._live, None
                yield from live
                return

    def _next(self) -> list[np.ndarray] | Literal[_Sentinel.END]:
        """The source's next batch, recorded while the budget allows; ``_END`` when the source is done."""
        if self._live is None:
            self._live = self._read()
        try:
            batch = next(self._live, _END)
        except BaseException:  # the read is broken (a bad batch): forget it, so a new pass starts afresh
            self._batches, self._bytes, self._live = [], 0, None
            raise
        if batch is _END:
            self.complete, self._live = True, None
            return batch
        self._bytes += sum(a.nbytes for a in batch)
        if self._bytes > self._budget:
            self._batches = None
        elif self._batches is not None:  # None only over the budget, which the byte count stays above
            self._batches.append(batch)
        return batch
