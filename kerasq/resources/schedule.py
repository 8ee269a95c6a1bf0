"""Execution orders that minimise peak activation memory, and the live-tensor cuts they induce.

While a step runs, the live tensors are the ones it reads and writes plus every tensor already
available (a graph input or written by an earlier step) that a later step still reads or that is a
graph output. The peak activation memory of an order is the largest total size of such a cut.

:func:`best_schedule` works in two stages, both polynomial:

1. **Chains become hill-valley segments** (Liu's generalized pebbling, 1987). A chain tail is a run of
   steps each reading only what the step before it wrote, that nothing else reads. Its memory is its own
   and adds to the rest, so any other work interleaved with it can be moved to one of a few pause points
   without raising the peak: between two pause points ``a < b`` with the segment's highest step ``h``, every
   residual before ``h`` is at least the one at ``a`` and every residual from ``h`` on at least the one at
   ``b``; work inside moves to ``a`` (before ``h``) or to ``b`` (after it), and the chain steps it passed then
   peak no higher than ``h`` did. A chain of a hundred steps becomes a handful of segments.
2. **Bottleneck shortest path over down-sets of the compressed graph** (sets of executed nodes closed under
   predecessors), level by level. The memory of running node ``s`` after the executed set ``S`` depends only
   on ``(S, s)``, so the best peak of each down-set is exact. Fork-join blocks of ``k`` branches have about
   ``(segments + 2)^k`` down-sets. When the whole lattice holds more than ``max_states`` down-sets, the
   search runs again keeping, per level, the ``max_states / levels`` states with the lowest (peak, resident
   memory), and the order is flagged ``exact=False``: at most ``2 * max_states`` states, each costing the
   graph's width, whatever the graph.
"""

from __future__ import annotations

import itertools
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
    max_states: int = 100_000,
) -> Schedule:
    """A topological order of ``steps`` minimising the peak cut size: exact when the compressed graph has at
    most ``max_states`` down-sets, else the best a pruned search finds (``exact=False``)."""
    producer = _producers(steps, inputs, outputs)
    output_set = set(outputs)
    needed = {t for s in steps for t in (*s.reads, *s.writes)} | output_set
    for t in needed:
        if t not in sizes:
            raise ValueError(f"no size given for live tensor {t}")
        if not sizes[t] >= 0 or not math.isfinite(sizes[t]):
            raise ValueError(f"tensor {t} has invalid size {sizes[t]!r}; sizes must be finite and >= 0")
    graph = _compress(steps, {t: float(sizes[t]) for t in needed}, producer, output_set)
    read_by_anyone = {t for s in steps for t in s.reads}
    start_mem = math.fsum(float(sizes[t]) for t in set(inputs) if t in read_by_anyone or t in output_set)
    nodes, exact = _search(graph, start_mem, max_states)
    order = [i for node in nodes for i in graph.members[node]]
    cuts = live_tensors(steps, inputs, outputs, order)
    peak = float(cut_sizes(cuts, sizes).max()) if cuts else 0.0
    return Schedule(order=tuple(order), cuts=cuts, peak=peak, exact=exact)


@dataclass
class _Graph:
    """The step graph with chain tails replaced by segment nodes.

    A step node changes memory by the tensor rule (it writes ``writes[i]``, keeps ``kept[i]``, frees the reads
    whose readers have all run); a segment node by fixed amounts (``rise[i]`` above the resident memory while it
    runs, ``delta[i]`` after it), as its tensors are its chain's own."""

    members: list[tuple[int, ...]]  # original step indices of each node, in execution order
    segment: list[bool]
    pred: list[int]  # bitmask of predecessor nodes
    succ: list[list[int]]
    writes: list[float]  # step nodes: size of everything written; segment nodes: rise
    kept: list[float]  # step nodes: size of the writes that outlive the step; segment nodes: delta
    reads: list[
        tuple[tuple[int, float], ...]
    ]  # step nodes: (reader bitmask, size) of each read that can be freed


def _pause_points(resident: Sequence[float], peak: Sequence[float]) -> list[int]:
    """Positions (0 .. len(peak)) where a chain tail may pause without raising the best peak: ``resident[k]``
    is the chain's own memory after its ``k``-th step (``resident[0]`` before the first), ``peak[k - 1]`` its
    memory while the ``k``-th step runs. Splits until every segment ``(a, b]`` with highest step ``h`` has
    ``resident >= resident[a]`` strictly between ``a`` and ``h`` and ``resident >= resident[b]`` from ``h`` to
    ``b`` (the condition under which interleaved work moves to ``a`` or ``b`` at no cost)."""
    r, p = np.asarray(resident, np.float64), np.asarray(peak, np.float64)
    points, stack = {0, len(p)}, [(0, len(p))]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        h = a + 1 + int(np.argmax(p[a:b]))  # position after the highest step of (a, b]
        left = r[a + 1 : h]  # residuals strictly between a and the hill
        if left.size and left.min() < r[a]:
            u = a + 1 + int(left.size - 1 - np.argmin(left[::-1]))  # the last lowest
        else:
            right = r[h:b]  # residuals from the hill to just before b
            if not (right.size and right.min() < r[b]):
                continue
            u = h + int(np.argmin(right))
        points.add(u)
        stack += [(a, u), (u, b)]
    return sorted(points)


def _add_segments(
    g: _Graph, node_of: list[int], tail: list[int], resident: list[float], peak: list[float]
) -> None:
    """Append a chain's ``tail`` (step indices after its head) to ``g`` as one segment node per hill-valley
    segment (``_pause_points`` of its ``resident`` and ``peak`` memory), noting each step's node in
    ``node_of``."""
    points = _pause_points(resident, peak)
    for a, b in itertools.pairwise(points):
        for j in tail[a:b]:
            node_of[j] = len(g.members)
        g.members.append(tuple(tail[a:b]))
        g.segment.append(True)
        g.writes.append(max(peak[a:b]) - resident[a])
        g.kept.append(resident[b] - resident[a])


def _link_nodes(
    g: _Graph,
    steps: Sequence[Step],
    sizes: Mapping[int, float],
    outputs: set[int],
    preds: list[set[int]],
    node_of: list[int],
) -> None:
    """Fill the edges of ``g`` once its nodes are made: each node's predecessor mask (a segment's is the node
    before it in its chain), a step node's freeable reads with the mask of their readers, and the successor
    lists."""
    readers: dict[int, int] = {}
    for i, s in enumerate(steps):
        for t in s.reads:
            readers[t] = readers.get(t, 0) | (1 << node_of[i])
    for node, members in enumerate(g.members):
        first = members[0]
        if g.segment[node]:
            g.pred.append(1 << (node - 1))  # the head or the previous segment of its chain
            g.reads.append(())
        else:
            g.pred.append(sum(1 << k for k in {node_of[j] for j in preds[first]}))
            frees = [(readers[t], sizes[t]) for t in set(steps[first].reads) if t not in outputs]
            g.reads.append(tuple(frees))
    g.succ = [[] for _ in g.members]
    for node, mask in enumerate(g.pred):
        while mask:
            low = mask & -mask
            g.succ[low.bit_length() - 1].append(node)
            mask ^= low


def _compress(
    steps: Sequence[Step], sizes: Mapping[int, float], producer: Mapping[int, int], outputs: set[int]
) -> _Graph:
    """Chains (a head step, then steps reading only their predecessor's writes, which nothing else reads) are
    kept as the head plus one node per hill-valley segment of the tail."""
    n = len(steps)
    preds = [{producer[t] for t in s.reads if t in producer} for s in steps]
    reads_input = [any(t not in producer for t in s.reads) for s in steps]
    succs: list[set[int]] = [set() for _ in range(n)]
    for i, p in enumerate(preds):
        for j in p:
            succs[j].add(i)
    read = {t for s in steps for t in s.reads}
    writes = [math.fsum(sizes[t] for t in set(s.writes)) for s in steps]
    kept = [math.fsum(sizes[t] for t in set(s.writes) if t in read or t in outputs) for s in steps]

    def is_tail(j: int) -> bool:
        return len(preds[j]) == 1 and not reads_input[j] and len(succs[next(iter(preds[j]))]) == 1

    g = _Graph(members=[], segment=[], pred=[], succ=[], writes=[], kept=[], reads=[])
    node_of = [0] * n
    for h in range(n):
        if is_tail(h):
            continue
        chain = [h]
        while len(succs[chain[-1]]) == 1 and is_tail(j := next(iter(succs[chain[-1]]))):
            chain.append(j)
        node_of[h] = len(g.members)
        g.members.append((h,))
        g.segment.append(False)
        g.writes.append(writes[h])
        g.kept.append(kept[h])
        tail = chain[1:]
        if not tail:
            continue
        resident, peak = [kept[h]], []
        for j in tail:
            peak.append(resident[-1] + writes[j])
            freed = math.fsum(sizes[t] for t in set(steps[j].reads) if t not in outputs)
            resident.append(resident[-1] + kept[j] - freed)
        _add_segments(g, node_of, tail, resident, peak)
    _link_nodes(g, steps, sizes, outputs, preds, node_of)
    return g


def _search(g: _Graph, start_mem: float, max_states: int) -> tuple[list[int], bool]:
    """Bottleneck shortest path over the down-sets of ``g``, level by level: exact while the down-sets number
    at most ``max_states``; beyond, each level keeps the ``max_states / levels`` states with the lowest
    (peak, resident memory). Returns the node order and whether it is exact."""
    order = _levels(g, start_mem, budget=max_states, cap=None)
    if order is not None:
        return order, True
    order = _levels(g, start_mem, budget=None, cap=max(1, max_states // max(len(g.members), 1)))
    assert order is not None, "without a state budget the search always ends with an order"
    return order, False


def _levels(g: _Graph, start_mem: float, budget: int | None, cap: int | None) -> list[int] | None:
    """The search itself: ``None`` once more than ``budget`` states were reached; at most ``cap`` per level."""
    n = len(g.members)

    def move(mask: int, mem: float, i: int) -> tuple[float, float]:
        """(memory while node ``i`` runs, resident memory after it) from down-set ``mask``."""
        if g.segment[i]:
            return mem + g.writes[i], mem + g.kept[i]
        left = ~(mask | (1 << i))
        freed = math.fsum(size for readers, size in g.reads[i] if not readers & left)
        return mem + g.writes[i], mem + g.kept[i] - freed

    def ready_after(ready: tuple[int, ...], mask: int, i: int) -> tuple[int, ...]:
        """``ready`` minus ``i`` plus the successors of ``i`` whose predecessors have all run, ascending: each
        move costs the graph's width, not its number of nodes."""
        new = mask | (1 << i)
        unlocked = [j for j in g.succ[i] if g.pred[j] & ~new == 0]
        return tuple(sorted([r for r in ready if r != i] + unlocked))

    parent: dict[int, tuple[int, int]] = {}  # down-set -> (previous down-set, node run to reach it)
    level = {0: (0.0, start_mem, tuple(i for i in range(n) if g.pred[i] == 0))}  # -> (peak, resident, ready)
    for _ in range(n):
        nxt: dict[int, tuple[float, float, tuple[int, ...]]] = {}
        for mask, (peak, mem, ready) in level.items():
            for i in ready:
                new = mask | (1 << i)
                during, after = move(mask, mem, i)
                value = max(peak, during)
                if new not in nxt:
                    nxt[new] = (value, after, ready_after(ready, mask, i))
                    parent[new] = (mask, i)
                elif value < nxt[new][0]:
                    nxt[new] = (value, *nxt[new][1:])
                    parent[new] = (mask, i)
        if budget is not None and len(parent) > budget:
            return None
        if cap is not None and len(nxt) > cap:
            nxt = dict(sorted(nxt.items(), key=lambda item: item[1][:2])[:cap])
        level = nxt
    order, mask = [], (1 << n) - 1
    while mask:
        mask, i = parent[mask]
        order.append(i)
    return order[::-1]
