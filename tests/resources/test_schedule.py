"""Tests for kerasq.resources.schedule: live-tensor cuts and minimum-peak execution orders."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerasq.resources.schedule import Step, best_schedule, cut_sizes, live_tensors


def _is_topological(steps, inputs, order) -> bool:
    available = set(inputs)
    for i in order:
        if not set(steps[i].reads) <= available:
            return False
        available.update(steps[i].writes)
    return sorted(order) == list(range(len(steps)))


def _naive_cuts(steps, inputs, outputs, order):
    """The liveness rule written out literally, as an oracle for live_tensors."""
    cuts = []
    for k, i in enumerate(order):
        available = set(inputs) | {t for j in order[:k] for t in steps[j].writes}
        later = {t for j in order[k + 1 :] for t in steps[j].reads}
        alive = {t for t in available if t in later or t in outputs}
        cuts.append(frozenset(alive | set(steps[i].reads) | set(steps[i].writes)))
    return tuple(cuts)


def _brute_force_peak(steps, sizes, inputs, outputs) -> float:
    peaks = [
        cut_sizes(_naive_cuts(steps, inputs, outputs, order), sizes).max()
        for order in itertools.permutations(range(len(steps)))
        if _is_topological(steps, inputs, order)
    ]
    return float(min(peaks))


def test_chain_peak_is_max_of_input_plus_output():
    # x(3) -a-> t1(5) -b-> t2(7) -c-> t3(2)
    steps = [Step("a", (0,), (1,)), Step("b", (1,), (2,)), Step("c", (2,), (3,))]
    sizes = {0: 3, 1: 5, 2: 7, 3: 2}
    s = best_schedule(steps, sizes, inputs=[0], outputs=[3])
    assert s.order == (0, 1, 2)
    assert s.cuts == (frozenset({0, 1}), frozenset({1, 2}), frozenset({2, 3}))
    assert cut_sizes(s.cuts, sizes).tolist() == [8.0, 12.0, 9.0]
    assert s.peak == 12.0
    assert s.exact


def test_residual_skip_tensor_stays_alive():
    # x(8) -conv1-> y1(16) -conv2-> y2(4); add(y2, x) -> z(8)
    steps = [Step("conv1", (0,), (1,)), Step("conv2", (1,), (2,)), Step("add", (2, 0), (3,))]
    sizes = {0: 8, 1: 16, 2: 4, 3: 8}
    s = best_schedule(steps, sizes, inputs=[0], outputs=[3])
    assert s.cuts == (frozenset({0, 1}), frozenset({0, 1, 2}), frozenset({0, 2, 3}))
    assert s.peak == 28.0  # x + y1 + y2 during conv2; without the skip it would be 20


# x(10) -> branch A: a1 -> h(100) -> a2 -> ya(1);  branch B: b1 -> yb(50);  concat(ya, yb) -> z(1)
_BRANCHES = (
    [Step("a1", (0,), (1,)), Step("a2", (1,), (2,)), Step("b1", (0,), (3,)), Step("concat", (2, 3), (4,))],
    {0: 10, 1: 100, 2: 1, 3: 50, 4: 1},
)


def test_branch_with_small_footprint_runs_first():
    # x(10) -> branch A: a1 -> h(100) -> a2 -> ya(1);  branch B: b1 -> yb(50);  concat(ya, yb) -> z(1)
    steps, sizes = _BRANCHES
    s = best_schedule(steps, sizes, inputs=[0], outputs=[4])
    # A first: a1 {x,h}=110, a2 {x,h,ya}=111, b1 {x,ya,yb}=61, concat {ya,yb,z}=52.
    assert s.order == (0, 1, 2, 3)
    assert cut_sizes(s.cuts, sizes).tolist() == [110.0, 111.0, 61.0, 52.0]
    assert s.peak == 111.0
    # B first keeps yb(50) alive under branch A's peak: b1 60, a1 160, a2 151, concat 52.
    worse = cut_sizes(live_tensors(steps, [0], [4], (2, 0, 1, 3)), sizes)
    assert worse.tolist() == [60.0, 160.0, 151.0, 52.0]
    assert s.peak < worse.max()


def test_unused_input_is_never_live_and_outputs_stay_alive():
    # Input 9 is read by nobody and is not an output; t1 is an output read by b, so it survives b.
    steps = [Step("a", (0,), (1,)), Step("b", (1,), (2,)), Step("c", (2,), (3,))]
    cuts = live_tensors(steps, inputs=[0, 9], outputs=[1, 3], order=(0, 1, 2))
    assert cuts == (frozenset({0, 1}), frozenset({1, 2}), frozenset({1, 2, 3}))
    assert cut_sizes(cuts, {0: 1, 1: 2, 2: 4, 3: 0}).tolist() == [3.0, 6.0, 6.0]


@st.composite
def _dags(draw):
    n = draw(st.integers(2, 7))
    n_inputs = draw(st.integers(1, 2))
    tensors = list(range(n_inputs))
    built = []
    next_id = n_inputs
    for k in range(n):
        reads = draw(st.lists(st.sampled_from(tensors), min_size=0, max_size=3, unique=True))
        n_writes = draw(st.integers(0 if k else 1, 2))
        writes = tuple(range(next_id, next_id + n_writes))
        next_id += n_writes
        tensors.extend(writes)
        built.append(Step(f"s{k}", tuple(reads), writes))
    # Shuffle step indices so the index order is not always a topological order.
    perm = draw(st.permutations(range(n)))
    steps = [built[p] for p in perm]
    sizes = {t: draw(st.integers(0, 20)) for t in tensors}
    outputs = draw(st.lists(st.sampled_from(tensors), min_size=1, max_size=3, unique=True))
    return steps, sizes, list(range(n_inputs)), outputs


@settings(max_examples=150, deadline=None)
@given(_dags())
def test_matches_brute_force_over_all_topological_orders(dag):
    _assert_optimal(*dag, _brute_force_peak(*dag))


def _assert_optimal(steps, sizes, inputs, outputs, optimum: float) -> None:
    s = best_schedule(steps, sizes, inputs, outputs)
    assert s.exact
    assert _is_topological(steps, inputs, s.order)
    assert s.cuts == live_tensors(steps, inputs, outputs, s.order)
    assert s.cuts == _naive_cuts(steps, inputs, outputs, s.order)
    assert s.peak == pytest.approx(optimum)
    assert s.peak == pytest.approx(cut_sizes(s.cuts, sizes).max())


@settings(max_examples=60, deadline=None)
@given(_dags())
def test_greedy_fallback_is_valid_and_not_better_than_exact(dag):
    steps, sizes, inputs, outputs = dag
    exact = best_schedule(steps, sizes, inputs, outputs)
    greedy = best_schedule(steps, sizes, inputs, outputs, max_states=1)
    assert not greedy.exact or greedy.peak == exact.peak  # exact only when the compressed lattice is a path
    assert _is_topological(steps, inputs, greedy.order)
    assert greedy.cuts == _naive_cuts(steps, inputs, outputs, greedy.order)
    assert greedy.peak == pytest.approx(cut_sizes(greedy.cuts, sizes).max())
    assert greedy.peak >= exact.peak - 1e-9


def test_greedy_fallback_on_branches_picks_least_allocating_step():
    # Same graph as the branch test: greedy runs b1 first (resident 60 after it, vs 110 after a1),
    # which is exactly the worse order with peak 160 > 111.
    steps, sizes = _BRANCHES
    greedy = best_schedule(steps, sizes, [0], [4], max_states=1)
    assert not greedy.exact
    assert greedy.order == (2, 0, 1, 3)
    assert greedy.peak == 160.0
    assert best_schedule(steps, sizes, [0], [4]).peak == 111.0


def _resnet_like(n_blocks: int, seed: int = 0):
    """Blocks of 4 steps: conv1(x)->y1, conv2(y1)->y2, shortcut(x)->sx, add(y2, sx)->z."""
    rng = np.random.default_rng(seed)
    steps, sizes, blocks = [], {0: 64}, []
    x = 0
    for b in range(n_blocks):
        y1, y2, sx, z = range(4 * b + 1, 4 * b + 5)
        block = [
            Step(f"conv1_{b}", (x,), (y1,)),
            Step(f"conv2_{b}", (y1,), (y2,)),
            Step(f"short_{b}", (x,), (sx,)),
            Step(f"add_{b}", (y2, sx), (z,)),
        ]
        steps.extend(block)
        blocks.append((block, x, z))
        sizes.update({t: int(rng.integers(1, 100)) for t in (y1, y2, sx, z)})
        x = z
    return steps, sizes, blocks, x


def test_300_step_resnet_like_chain_is_fast_and_optimal():
    steps, sizes, blocks, out = _resnet_like(75)
    assert len(steps) == 300
    t0 = time.perf_counter()
    s = best_schedule(steps, sizes, inputs=[0], outputs=[out])
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"best_schedule took {elapsed:.2f}s"
    assert s.exact
    assert _is_topological(steps, [0], s.order)
    # Only z crosses block boundaries, so the optimum is the max of the per-block optima.
    expected = max(_brute_force_peak(block, sizes, [x], [z]) for block, x, z in blocks)
    assert s.peak == expected
    assert s.peak <= best_schedule(steps, sizes, [0], [out], max_states=1).peak


def _nasnet_like(n_cells: int, branches: int, seed: int = 0):
    """Cells of ``branches`` parallel two-step branches reading the two previous cell outputs, concatenated:
    NASNet's shape (wide cells, about a thousand steps), with many down-sets per cell."""
    rng = np.random.default_rng(seed)
    steps, sizes, prev, ids = [], {0: 64, 1: 64}, (0, 1), iter(range(2, 10**6))
    for c in range(n_cells):
        ends = []
        for b in range(branches):
            mid, end = next(ids), next(ids)
            steps += [Step(f"c{c}b{b}a", (prev[b % 2],), (mid,)), Step(f"c{c}b{b}b", (mid,), (end,))]
            sizes.update({mid: int(rng.integers(1, 100)), end: int(rng.integers(1, 100))})
            ends.append(end)
        out = next(ids)
        steps.append(Step(f"c{c}concat", tuple(ends), (out,)))
        sizes[out] = sum(sizes[e] for e in ends)
        prev = (prev[1], out)
    return steps, sizes, prev[1]


def test_wide_1000_step_cells_are_scheduled_exactly_in_seconds():
    steps, sizes, out = _nasnet_like(110, branches=4)
    assert len(steps) == 990
    t0 = time.perf_counter()
    s = best_schedule(steps, sizes, inputs=[0, 1], outputs=[out])
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"best_schedule took {elapsed:.2f}s"  # 8 s when every state rescanned all steps
    assert s.exact
    assert _is_topological(steps, [0, 1], s.order)
    assert s.peak <= best_schedule(steps, sizes, [0, 1], [out], max_states=1).peak


def test_zero_size_tensor_and_empty_graph():
    steps = [Step("fused", (0,), (1,)), Step("b", (1,), (2,))]
    s = best_schedule(steps, {0: 4, 1: 0, 2: 3}, inputs=[0], outputs=[2])
    assert cut_sizes(s.cuts, {0: 4, 1: 0, 2: 3}).tolist() == [4.0, 3.0]
    assert s.peak == 4.0
    empty = best_schedule([], {}, inputs=[], outputs=[])
    assert empty.order == () and empty.cuts == () and empty.peak == 0.0


@pytest.mark.parametrize(
    "steps, sizes, inputs, outputs, match",
    [
        ([Step("a", (0,), (1,)), Step("b", (7,), (2,))], {0: 1, 1: 1, 2: 1}, [0], [2], r"'b'.*tensor 7"),
        ([Step("a", (0, 2), (1,)), Step("b", (1,), (2,))], {0: 1, 1: 1, 2: 1}, [0], [2], "cycle"),
        ([Step("a", (0,), (0,))], {0: 1}, [], [0], "cycle"),
        ([Step("a", (0,), (1,)), Step("b", (0,), (1,))], {0: 1, 1: 1}, [0], [1], "written more than once"),
        ([Step("a", (0,), (0,))], {0: 1}, [0], [0], "written more than once"),
        ([Step("a", (0,), (1,))], {0: 1, 1: -2}, [0], [1], "invalid size"),
        ([Step("a", (0,), (1,))], {0: 1, 1: float("nan")}, [0], [1], "invalid size"),
        ([Step("a", (0,), (1,))], {0: 1}, [0], [1], "no size given for live tensor 1"),
        ([Step("a", (0,), (1,))], {0: 1, 1: 1}, [0], [5], "output tensor 5"),
    ],
)
def test_validation_errors(steps, sizes, inputs, outputs, match):
    with pytest.raises(ValueError, match=match):
        best_schedule(steps, sizes, inputs, outputs)


def test_live_tensors_rejects_bad_orders():
    steps = [Step("a", (0,), (1,)), Step("b", (1,), (2,))]
    with pytest.raises(ValueError, match="not topological"):
        live_tensors(steps, [0], [2], (1, 0))
    with pytest.raises(ValueError, match="permutation"):
        live_tensors(steps, [0], [2], (0,))
    with pytest.raises(ValueError, match="no size given"):
        cut_sizes(live_tensors(steps, [0], [2], (0, 1)), {0: 1, 1: 1})


def _topological_orders(steps, inputs):
    """Every topological order, by depth-first search (far fewer than all permutations on branchy graphs)."""

    def extend(order, available):
        if len(order) == len(steps):
            yield tuple(order)
            return
        for i, step in enumerate(steps):
            if i not in order and set(step.reads) <= available:
                yield from extend([*order, i], available | set(step.writes))

    yield from extend([], set(inputs))


def _exhaustive_peak(steps, sizes, inputs, outputs) -> float:
    return float(
        min(
            cut_sizes(_naive_cuts(steps, inputs, outputs, order), sizes).max()
            for order in _topological_orders(steps, inputs)
        )
    )


@st.composite
def _series_parallel(draw, max_steps: int = 10):
    """A random series-parallel network on one input: single steps, series compositions, and forks whose
    branches join in one step that may also read the fork's tensor (a residual skip). Some inner tensors are
    graph outputs too; step indices are shuffled."""
    ids, steps, sizes = itertools.count(1), [], {0: draw(st.integers(0, 20))}
    size = st.integers(0, 20)

    def block(x: int, budget: int) -> int:
        kind = draw(st.sampled_from(["step", "series", "fork"])) if budget >= 3 else "step"
        if kind == "series":
            first = draw(st.integers(1, budget - 1))
            return block(block(x, first), budget - first)
        if kind == "fork":
            n_branches = draw(st.integers(2, min(3, budget - 1)))
            shares = [1] * n_branches
            for _ in range(draw(st.integers(0, budget - 1 - n_branches))):
                shares[draw(st.integers(0, n_branches - 1))] += 1
            ends = [block(x, s) for s in shares]
            reads = (*ends, x) if draw(st.booleans()) else tuple(ends)
        else:
            reads = (x,)
        t = next(ids)
        steps.append(Step(f"s{t}", reads, (t,)))
        sizes[t] = draw(size)
        return t

    out = block(0, draw(st.integers(1, max_steps)))
    extra = draw(st.lists(st.sampled_from(sorted(sizes)), max_size=1))
    perm = draw(st.permutations(range(len(steps))))
    return [steps[p] for p in perm], sizes, [0], [out, *extra]


@settings(max_examples=200, deadline=None)
@given(_series_parallel())
def test_series_parallel_peak_equals_exhaustive_search(graph):
    _assert_optimal(*graph, _exhaustive_peak(*graph))


def _fork_join(n_branches: int, length: int, skip: bool, seed: int = 0):
    """x(64) -> ``n_branches`` chains of ``length`` steps (random sizes) -> one join (reading x too when
    ``skip``) writing 1: a small join, so the peak is set by how the branches interleave."""
    rng = np.random.default_rng(seed)
    chains = [rng.integers(1, 100, length).astype(np.float64) for _ in range(n_branches)]
    steps, sizes, out = _fork_join_of(chains, skip, x=64, out=1)
    return steps, sizes, out, chains


def _fork_join_of(chains, skip: bool, x: float, out: float):
    """x -> one chain per entry of ``chains`` (its steps' output sizes) -> a join writing ``out``."""
    steps, sizes, ends, ids = [], {0: x}, [], itertools.count(1)
    for b, chain in enumerate(chains):
        prev = 0
        for k, size in enumerate(chain):
            t = next(ids)
            steps.append(Step(f"b{b}_{k}", (prev,), (t,)))
            sizes[t], prev = float(size), t
        ends.append(prev)
    join = next(ids)
    steps.append(Step("join", (*ends, 0) if skip else tuple(ends), (join,)))
    sizes[join] = out
    return steps, sizes, join


def _grid_optimum(chains, x: float, out: float) -> float:
    """Best peak over every interleaving of the chains (x freed once every chain has started), by a
    bottleneck DP over the grid of chain positions, one level (positions summed) at a time."""
    k = len(chains)
    shape = tuple(len(c) + 1 for c in chains)
    coords = np.indices(shape).reshape(k, -1)
    resident = [np.concatenate([[0.0], c]) for c in chains]  # chain i's own memory after p_i steps
    mem = sum(resident[i][coords[i]] for i in range(k)) + x * (coords == 0).any(axis=0)
    best = np.full(coords.shape[1], np.inf)
    best[0] = 0.0
    strides = [int(np.prod(shape[i + 1 :])) for i in range(k)]
    level = coords.sum(axis=0)
    for value in range(1, int(level.max()) + 1):
        idx = np.nonzero(level == value)[0]
        cand = np.full(idx.size, np.inf)
        for i in range(k):
            ok = coords[i, idx] > 0
            pred = idx[ok] - strides[i]
            during = mem[pred] + chains[i][coords[i, idx[ok]] - 1]  # the step writes, its input is resident
            cand[ok] = np.minimum(cand[ok], np.maximum(best[pred], during))
        best[idx] = cand
    return float(max(best[-1], mem[-1] + out))


def _liu_optimum(chains, base: float, out: float) -> float:
    """Liu's optimal merge of independent chains on top of ``base``: each chain cut into hill-valley segments
    (hill: highest peak of what is left; valley: lowest residual after it, last one), all segments run in
    decreasing hill - valley order."""
    segments = []
    for c, chain in enumerate(chains):
        resident = np.concatenate([[0.0], chain])
        peak = resident[:-1] + chain
        start = 0
        while start < len(chain):
            h = start + int(np.argmax(peak[start:]))
            tail = resident[h + 1 :]
            v = h + 1 + int(len(tail) - 1 - np.argmin(tail[::-1]))
            segments.append((peak[h] - resident[v], c, peak[h], resident[v]))
            start = v
    segments.sort(key=lambda s: -s[0])
    valley, best = [0.0] * len(chains), 0.0
    for _, c, hill, low in segments:
        current = base + sum(valley)
        best = max(best, current - valley[c] + hill)
        valley[c] = low
    return max(best, base + sum(valley) + out)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(1, 30), min_size=1, max_size=3), min_size=2, max_size=3))
def test_oracles_equal_exhaustive_search(chain_sizes):
    """The grid DP and Liu's merge (the oracles of the large tests) against every order on small cases."""
    chains = [np.array(c, np.float64) for c in chain_sizes]
    for skip, oracle in ((True, _liu_optimum(chains, 7, 5)), (False, _grid_optimum(chains, 7, 5))):
        steps, sizes, out = _fork_join_of(chains, skip, x=7, out=5)
        assert oracle == _exhaustive_peak(steps, sizes, [0], [out])


@pytest.mark.parametrize("length", [25, 100])
def test_four_long_branches_are_scheduled_optimally_in_milliseconds(length):
    """The down-set lattice of 4 branches of 100 steps has 10^8 states (the former exact search gave up after
    6 s at 4 x 25 and fell back to a greedy order up to 47% worse); chains collapse to a few segments."""
    for skip in (True, False):
        steps, sizes, out, chains = _fork_join(4, length, skip)
        t0 = time.perf_counter()
        s = best_schedule(steps, sizes, [0], [out])
        elapsed = time.perf_counter() - t0
        assert elapsed < 0.5, f"best_schedule took {elapsed:.2f}s"
        assert s.exact
        assert s.cuts == live_tensors(steps, [0], [out], s.order)
        assert best_schedule(steps, sizes, [0], [out], max_states=1).peak > 1.1 * s.peak  # greedy loses
        if skip:
            assert s.peak == _liu_optimum(chains, sizes[0], sizes[out])
        elif length == 25:
            assert s.peak == _grid_optimum(chains, sizes[0], sizes[out])


def test_chain_pauses_where_it_dips_below_its_head_output():
    """x(100) feeds a1 and b1 and dies once both ran. Branch A dips after a2 (ta2 = 1 < ta1 = 10), so the best
    order runs a1, a2 and then b1 (peak 111 while a2 runs); without the pause after a2, b1 runs next to ta1
    (115) or a later step of A next to x (121)."""
    steps = [
        Step("a1", (0,), (1,)), Step("a2", (1,), (2,)), Step("a3", (2,), (3,)), Step("a4", (3,), (4,)),
        Step("b1", (0,), (5,)), Step("b2", (5,), (6,)), Step("b3", (6,), (7,)),
        Step("join", (4, 7), (8,)),
    ]  # fmt: skip
    sizes = {0: 100, 1: 10, 2: 1, 3: 20, 4: 1, 5: 5, 6: 30, 7: 1, 8: 1}
    s = best_schedule(steps, sizes, [0], [8])
    assert s.peak == 111.0 == _exhaustive_peak(steps, sizes, [0], [8])
    assert s.order[:3] == (0, 1, 4)
