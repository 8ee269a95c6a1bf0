"""Execution orders that minimise peak activation memory, and the live-tensor cuts they induce.

While a step runs, the live tensors are the ones it reads and writes plus every tensor already
available (a graph input or written by an earlier step) that a later step still reads or that is a
graph output. The peak activation memory of an order is the largest total size of such a cut.

:func:`best_schedule` finds a minimum-peak topological order exactly by dynamic programming over the
down-sets of the step graph (sets of executed steps closed under predecessors). The memory of running
step ``s`` after the executed set ``S`` depends only on ``(S, s)``: it is the size of the tensors
resident after ``S`` plus the tensors ``s`` writes. The best achievable peak for reaching each down-set
is therefore a bottleneck shortest path over the lattice, processed level by level (by ``|S|``). For
chain-like CNNs the number of down-sets grows roughly linearly with the number of steps; when it
exceeds ``max_states`` a greedy order is returned instead, flagged with ``exact=False``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    name: str
    reads: tuple[int, ...]  # tensor ids consumed
    writes: tuple[int, ...]  # tensor ids produced (each tensor written by exactly one step)


@dataclass(frozen=True)
class Schedule:
    order: tuple[int, ...]  # step indices in execution order (a topological order)
    cuts: tuple[frozenset[int], ...]  # cuts[k] = tensors alive while order[k] runs
    peak: float  # max over cuts of the sum of sizes
    exact: bool = True  # False when the greedy fallback produced the order


def cut_sizes(cuts: Iterable[Iterable[int]], sizes: Mapping[int, float]) -> np.ndarray:
    """Total size of each cut (one float per cut)."""
    out = []
    for cut in cuts:
        missing = [t for t in cut if t not in sizes]
        if missing:
            raise ValueError(f"no size given for live tensor {sorted(missing)[0]}")
        out.append(math.fsum(float(sizes[t]) for t in cut))
    return np.asarray(out, dtype=np.float64)


def _producers(steps: Sequence[Step], inputs: Sequence[int], outputs: Sequence[int]) -> dict[int, int]:
    """Map each written tensor to its step, validating the graph (unknown tensors, double writes, cycles)."""
    input_set = set(inputs)
    producer: dict[int, int] = {}
    for i, step in enumerate(steps):
        for t in step.writes:
            if t in producer or t in input_set:
                raise ValueError(f"tensor {t} is written more than once (again by step {step.name!r})")
            producer[t] = i
    for step in steps:
        for t in step.reads:
            if t not in producer and t not in input_set:
                raise ValueError(
                    f"step {step.name!r} reads tensor {t}, which is neither written nor an input"
                )
    for t in outputs:
        if t not in producer and t not in input_set:
            raise ValueError(f"output tensor {t} is neither written by a step nor a graph input")
    # Cycle check (Kahn's algorithm).
    preds = [{producer[t] for t in step.reads if t in producer} for step in steps]
    indegree = [len(p) for p in preds]
    succs: list[list[int]] = [[] for _ in steps]
    for i, p in enumerate(preds):
        for j in p:
            succs[j].append(i)
    ready = [i for i, d in enumerate(indegree) if d == 0]
    seen = 0
    while ready:
        i = ready.pop()
        seen += 1
        for j in succs[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                ready.append(j)
    if seen != len(steps):
        raise ValueError("the step graph has a cycle")
    return producer


def live_tensors(
    steps: Sequence[Step], inputs: Sequence[int], outputs: Sequence[int], order: Sequence[int]
) -> tuple[frozenset[int], ...]:
    """The cut (set of live tensors) while each step of ``order`` runs."""
    _producers(steps, inputs, outputs)
    if sorted(order) != list(range(len(steps))):
        raise ValueError("order must be a permutation of the step indices")
    output_set = set(outputs)
    pending: dict[int, int] = {}  # tensor -> number of not-yet-run readers
    for step in steps:
        for t in set(step.reads):
            pending[t] = pending.get(t, 0) + 1
    available = set(inputs)
    resident = {t for t in available if pending.get(t, 0) > 0 or t in output_set}
    cuts = []
    for i in order:
        step = steps[i]
        reads = set(step.reads)
        if not reads <= available:
            raise ValueError(f"order is not topological: step {step.name!r} runs before its inputs exist")
        for t in reads:
            pending[t] -= 1
        cuts.append(frozenset(resident | reads | set(step.writes)))
        available.update(step.writes)
        resident.update(t for t in step.writes if pending.get(t, 0) > 0 or t in output_set)
        resident.difference_update(t for t in reads if pending[t] == 0 and t not in output_set)
    return tuple(cuts)


def best_schedule(
    steps: Sequence[Step],
    sizes: Mapping[int, float],
    inputs: Sequence[int],
    outputs: Sequence[int],
    *,
    max_states: int = 200_000,
) -> Schedule:
    """A topological order of ``steps`` minimising the peak cut size (exact unless ``max_states`` is hit)."""
    producer = _producers(steps, inputs, outputs)
    output_set = set(outputs)
    needed = {t for s in steps for t in (*s.reads, *s.writes)} | output_set
    for t in needed:
        if t not in sizes:
            raise ValueError(f"no size given for live tensor {t}")
        if not sizes[t] >= 0 or not math.isfinite(sizes[t]):
            raise ValueError(f"tensor {t} has invalid size {sizes[t]!r}; sizes must be finite and >= 0")

    n = len(steps)
    readers: dict[int, int] = {}  # tensor -> bitmask of steps reading it
    for i, step in enumerate(steps):
        for t in step.reads:
            readers[t] = readers.get(t, 0) | (1 << i)
    pred = [0] * n
    succ: list[list[int]] = [[] for _ in range(n)]  # steps reading what each step writes
    for i, step in enumerate(steps):
        for j in dict.fromkeys(producer[t] for t in step.reads if t in producer):
            pred[i] |= 1 << j
            succ[j].append(i)
    # Tensors a step writes and that outlive it; their size stays resident after the step.
    writes = [float(sum(sizes[t] for t in set(s.writes))) for s in steps]
    kept = [
        float(sum(sizes[t] for t in set(s.writes) if readers.get(t, 0) or t in output_set)) for s in steps
    ]
    start_mem = float(sum(sizes[t] for t in set(inputs) if readers.get(t, 0) or t in output_set))

    def after(mask: int, mem: float, i: int) -> float:
        """Resident memory after running step ``i`` from down-set ``mask`` with resident memory ``mem``."""
        new = mask | (1 << i)
        freed = sum(sizes[t] for t in set(steps[i].reads) if t not in output_set and not readers[t] & ~new)
        return mem + kept[i] - freed

    def ready_after(ready: tuple[int, ...], mask: int, i: int) -> tuple[int, ...]:
        """The steps ready once ``i`` has run from down-set ``mask`` (where ``ready`` were): ``ready`` minus
        ``i`` plus the successors of ``i`` whose predecessors have all run, ascending. Updating the set from
        step to step keeps each move proportional to the graph's width, not to its number of steps."""
        new = mask | (1 << i)
        unlocked = [j for j in succ[i] if pred[j] & ~new == 0]
        return tuple(sorted([r for r in ready if r != i] + unlocked))

    start = tuple(i for i in range(n) if pred[i] == 0)
    order = _exact_order(n, start, ready_after, after, writes, start_mem, max_states)
    exact = order is not None
    if order is None:
        order, mask, mem, ready = [], 0, start_mem, start
        for _ in range(n):
            i = min(ready, key=lambda j: (after(mask, mem, j), j))
            ready = ready_after(ready, mask, i)
            mem, mask = after(mask, mem, i), mask | (1 << i)
            order.append(i)
    cuts = live_tensors(steps, inputs, outputs, order)
    peak = float(cut_sizes(cuts, sizes).max()) if cuts else 0.0
    return Schedule(order=tuple(order), cuts=cuts, peak=peak, exact=exact)


def _exact_order(n, start, ready_after, after, writes, start_mem, max_states) -> list[int] | None:
    """Bottleneck shortest path over the down-set lattice; ``None`` if it has more than ``max_states``."""
    parent: dict[int, tuple[int, int]] = {}  # down-set -> (previous down-set, step run to reach it)
    level = {0: (0.0, start_mem, start)}  # down-set -> (best peak so far, resident memory, ready steps)
    for _ in range(n):
        nxt: dict[int, tuple[float, float, tuple[int, ...]]] = {}
        for mask, (peak, mem, ready) in level.items():
            for i in ready:
                new = mask | (1 << i)
                value = max(peak, mem + writes[i])
                if new not in nxt:
                    if len(parent) + 1 >= max_states:
                        return None
                    nxt[new] = (value, after(mask, mem, i), ready_after(ready, mask, i))
                    parent[new] = (mask, i)
                elif value < nxt[new][0]:
                    nxt[new] = (value, *nxt[new][1:])
                    parent[new] = (mask, i)
        level = nxt
    order, mask = [], (1 << n) - 1
    while mask:
        mask, i = parent[mask]
        order.append(i)
    return order[::-1]
