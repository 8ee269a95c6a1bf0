"""The replay cache: one read of the source while it fits in memory, every pass correct when it does not."""

from __future__ import annotations

import numpy as np
import pytest

from kerasq.data.replay import ReplayCache

BATCHES = [[np.full(4, i, np.float32)] for i in range(5)]  # 16 bytes each


class Source:
    def __init__(self, fail_at: int | None = None) -> None:
        self.reads, self.fail_at = 0, fail_at

    def __call__(self):
        self.reads += 1
        for i, batch in enumerate(BATCHES):
            if i == self.fail_at and self.reads == 1:
                raise ValueError("bad batch")
            yield batch


def _values(passes) -> list[float]:
    return [float(b[0][0]) for b in passes]


def test_passes_replay_one_read_even_when_interleaved():
    source = Source()
    cache = ReplayCache(source, budget=1000)
    first = iter(cache)
    assert _values([next(first), next(first)]) == [0, 1]
    assert _values(cache) == [0, 1, 2, 3, 4]  # a second pass takes over the read
    assert _values(first) == [2, 3, 4]  # and the first goes on from what was recorded
    assert source.reads == 1 and cache.complete


def test_over_the_budget_every_pass_reads_the_source():
    source = Source()
    cache = ReplayCache(source, budget=40)  # two batches
    assert _values(cache) == [0, 1, 2, 3, 4]
    assert _values(cache) == [0, 1, 2, 3, 4]
    assert source.reads == 2 and not cache.complete


def test_a_broken_read_is_forgotten():
    source = Source(fail_at=2)
    cache = ReplayCache(source, budget=1000)
    with pytest.raises(ValueError, match="bad batch"):
        list(cache)
    assert _values(cache) == [0, 1, 2, 3, 4]  # no duplicates from the broken read
