"""Bit-allocation integer program: optimality against brute force, budgets, errors and speed."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kerasq.mixed_precision.solver import (
    InfeasibleTargetError,
    MixedPrecisionProblem,
    ResourceRow,
    evaluate,
    greedy_raise,
    min_reachable,
    solve,
)

RTOL = 1e-9


def row_value(row: ResourceRow, choice) -> float:
    """Reference value of one row, written independently of the solver module."""
    v = row.constant + sum(float(t[choice[u]]) for u, t in row.terms.items())
    return v + sum(float(m[choice[u], choice[w]]) for (u, w), m in row.pairs.items())


def resource_values(problem: MixedPrecisionProblem, choice) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in problem.rows:
        out[row.resource] = max(out.get(row.resource, -np.inf), row_value(row, choice))
    return out


def fits(problem: MixedPrecisionProblem, choice) -> bool:
    vals = resource_values(problem, choice)
    return all(
        vals[r] <= b + RTOL * max(abs(b), abs(vals[r])) for r, b in problem.budgets.items() if r in vals
    )


def objective(problem: MixedPrecisionProblem, choice) -> float:
    return float(sum(s[c] for s, c in zip(problem.sensitivity, choice, strict=True)))


def all_choices(problem: MixedPrecisionProblem):
    return itertools.product(*(range(len(s)) for s in problem.sensitivity))


def brute_force(problem: MixedPrecisionProblem):
    """(best objective, best choice) over feasible choices, or (None, None)."""
    best = (None, None)
    for c in all_choices(problem):
        if fits(problem, c) and (best[0] is None or objective(problem, c) < best[0]):
            best = (objective(problem, c), c)
    return best


def decreasing(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    return np.sort(rng.uniform(0, scale, n))[::-1].copy()


def random_rows(rng: np.random.Generator, sizes: list[int], n_res: int) -> list[ResourceRow]:
    n_units, rows = len(sizes), []
    for k in range(n_res):
        for _ in range(int(rng.integers(1, 3))):  # 1-2 rows per resource: a max over rows
            units = [u for u in range(n_units) if rng.random() < 0.7]
            terms = {u: decreasing(rng, sizes[u], 10.0) for u in units}
            pairs = {}
            if n_units >= 2 and rng.random() < 0.6:
                for u in rng.choice(n_units - 1, size=int(rng.integers(1, n_units)), replace=False):
                    u, w = (int(u), int(u) + 1) if rng.random() < 0.5 else (int(u) + 1, int(u))
                    pairs[(u, w)] = np.outer(decreasing(rng, sizes[u], 3.0), decreasing(rng, sizes[w], 3.0))
            rows.append(ResourceRow(f"r{k}", float(rng.uniform(0, 2)), terms, pairs))
    return rows


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3), min_size=2, max_size=5),
    n_res=st.integers(1, 3),
    fracs=st.lists(st.floats(-0.15, 1.0), min_size=3, max_size=3),
    seed=st.integers(0, 2**32 - 1),
    integer_sens=st.booleans(),
)
@example(sizes=[2, 1], n_res=1, fracs=[-1e-09, 0.0, 0.0], seed=1344, integer_sens=False)  # a budget a hair
# below the minimum, within tolerance: once infeasible for HiGHS after passing the reachability check
def test_solve_matches_brute_force(sizes, n_res, fracs, seed, integer_sens):
    rng = np.random.default_rng(seed)
    sens = [rng.integers(0, 4, n).astype(float) if integer_sens else rng.uniform(0, 5, n) for n in sizes]
    rows = random_rows(rng, sizes, n_res)
    unbudgeted = MixedPrecisionProblem(sens, rows, {})
    vals = [resource_values(unbudgeted, c) for c in all_choices(unbudgeted)]
    lo = {r: min(v[r] for v in vals) for r in vals[0]}
    hi = {r: max(v[r] for v in vals) for r in vals[0]}
    budgets = {r: lo[r] + f * (hi[r] - lo[r]) for r, f in zip(sorted(lo), fracs, strict=False)}
    if n_res == 3 and fracs[2] > 0.9:  # sometimes a resource without budget: reported, not constrained
        del budgets["r2"]
    problem = MixedPrecisionProblem(sens, rows, budgets)

    best, _ = brute_force(problem)
    if best is None:
        with pytest.raises(InfeasibleTargetError) as info:
            solve(problem)
        err = info.value
        below = [r for r, b in budgets.items() if b < lo[r] - RTOL * abs(lo[r])]
        if below:  # one resource alone is out of reach: it is named, with its exact minimum
            assert err.resource in below
            assert err.requested == budgets[err.resource]
            assert err.reachable == pytest.approx(lo[err.resource], rel=RTOL, abs=1e-12)
            assert err.reachable == pytest.approx(min_reachable(problem, err.resource), rel=RTOL, abs=1e-12)
        else:
            assert err.resource == "+".join(budgets)
        return
    choice = solve(problem)
    assert choice.dtype.kind == "i" and choice.shape == (len(sizes),)
    assert fits(problem, choice)
    assert objective(problem, choice) == pytest.approx(best, rel=RTOL, abs=1e-12)
    for r in budgets:
        assert min_reachable(problem, r) == pytest.approx(lo[r], rel=RTOL, abs=1e-12)
    # the optimum cannot be improved by a feasible move to higher bits
    raised = greedy_raise(problem, choice)
    assert fits(problem, raised)
    assert objective(problem, raised) == pytest.approx(best, rel=RTOL, abs=1e-12)


def test_evaluate_matches_reference_and_max_over_rows():
    rng = np.random.default_rng(3)
    sizes = [3, 2, 3, 1]
    rows = random_rows(rng, sizes, 3)
    problem = MixedPrecisionProblem([np.zeros(n) for n in sizes], rows, {})
    for c in all_choices(problem):
        got, ref = evaluate(problem, c), resource_values(problem, c)
        assert got.keys() == ref.keys()
        for r in ref:
            assert got[r] == pytest.approx(ref[r], rel=1e-12)


def weights_problem(budget: float) -> MixedPrecisionProblem:
    """2 units, 8/4/2-bit kernels of 100 and 50 parameters (bytes = params * bits / 8)."""
    bits = np.array([8.0, 4.0, 2.0])
    rows = [ResourceRow("weights_memory", terms={0: 100 * bits / 8, 1: 50 * bits / 8})]
    return MixedPrecisionProblem([np.array([0.0, 1.0, 4.0]), np.array([0.0, 2.0, 9.0])], rows,
                                 {"weights_memory": budget})  # fmt: skip


def test_infeasible_single_resource_reports_exact_reachable():
    reachable = 100 * 2 / 8 + 50 * 2 / 8  # all 2-bit: 37.5 bytes
    with pytest.raises(InfeasibleTargetError) as info:
        solve(weights_problem(30.0))
    err = info.value
    assert isinstance(err, ValueError)
    assert err.resource == "weights_memory"
    assert err.requested == 30.0
    assert err.reachable == reachable
    msg = str(err)
    assert "weights_memory" in msg and "30" in msg and "37.5" in msg and "raise" in msg
    assert min_reachable(weights_problem(30.0), "weights_memory") == reachable


def test_budget_exactly_at_reachable_is_feasible():
    np.testing.assert_array_equal(solve(weights_problem(37.5)), [2, 2])
    # unit 0 costs 100/50/25 bytes (sens 0/1/4), unit 1 costs 50/25/12.5 (sens 0/2/9)
    # 75 bytes: [1, 1] = 75 (sens 3) beats [2, 0] = 75 (sens 4) and [1, 2] = 62.5 (sens 10)
    np.testing.assert_array_equal(solve(weights_problem(75.0)), [1, 1])
    # 112.5 bytes: [1, 0] = 100 (sens 1) beats [0, 2] = 112.5 (sens 9); [0, 1] = 125 does not fit
    np.testing.assert_array_equal(solve(weights_problem(112.5)), [1, 0])
    np.testing.assert_array_equal(solve(weights_problem(150.0)), [0, 0])


def test_joint_infeasibility_names_all_budgeted_resources():
    # memory wants unit 0 low and unit 1 high, the other resource the opposite
    rows = [
        ResourceRow("weights_memory", terms={0: np.array([10.0, 1.0]), 1: np.array([10.0, 1.0])}),
        ResourceRow("bops", pairs={(0, 1): np.array([[100.0, 1.0], [100.0, 100.0]])}),
    ]
    problem = MixedPrecisionProblem([np.zeros(2), np.zeros(2)], rows, {"weights_memory": 11.0, "bops": 1.0})
    assert min_reachable(problem, "weights_memory") == 2.0
    assert min_reachable(problem, "bops") == 1.0  # only at choice (0, 1), whose weights are 11
    np.testing.assert_array_equal(solve(problem), [0, 1])
    problem = MixedPrecisionProblem(problem.sensitivity, rows, {"weights_memory": 10.0, "bops": 1.0})
    with pytest.raises(InfeasibleTargetError, match="weights_memory") as info:
        solve(problem)
    assert info.value.resource == "weights_memory+bops"
    assert np.isnan(info.value.requested) and np.isnan(info.value.reachable)


def test_activation_rows_are_a_max_over_cuts():
    # 3 activation tensors, candidates 8/4 bits with sizes a*bits/8; two schedule cuts {0,1} and {1,2}
    bits = np.array([8.0, 4.0])
    act = {u: a * bits / 8 for u, a in enumerate([100.0, 40.0, 100.0])}
    rows = [ResourceRow("activation_memory", terms={0: act[0], 1: act[1]}),
            ResourceRow("activation_memory", terms={1: act[1], 2: act[2]})]  # fmt: skip
    sens = [np.array([0.0, 5.0]), np.array([0.0, 1.0]), np.array([0.0, 5.0])]
    problem = MixedPrecisionProblem(sens, rows, {"activation_memory": 90.0})
    choice = solve(problem)
    # tensors 0 and 2 must be at 4 bits (100 + 20 > 90); then tensor 1 fits at 8 bits: 50 + 40 = 90 per cut
    np.testing.assert_array_equal(choice, [1, 0, 1])
    assert evaluate(problem, choice) == {"activation_memory": 90.0}
    # the max over cuts, not the sum over tensors (120)
    assert min_reachable(problem, "activation_memory") == 70.0
    # the budget holds on every cut: [0, 1, 1] has cuts 120 and 70 and must not be chosen
    problem = MixedPrecisionProblem(sens, rows, {"activation_memory": 119.0})
    choice = solve(problem)
    assert max(row_value(r, choice) for r in rows) <= 119.0
    np.testing.assert_array_equal(choice, [1, 0, 1])


def test_greedy_raise_improves_a_suboptimal_choice():
    bits = np.array([8.0, 4.0, 2.0])
    params = [100.0, 60.0, 30.0]
    rows = [ResourceRow("weights_memory", terms={u: p * bits / 8 for u, p in enumerate(params)})]
    sens = [np.array([0.0, 2.0, 7.0]), np.array([0.0, 1.0, 6.0]), np.array([0.0, 4.0, 4.0])]
    problem = MixedPrecisionProblem(sens, rows, {"weights_memory": 110.0})
    start = np.array([2, 2, 2])  # 47.5 bytes: feasible, objective 17
    raised = greedy_raise(problem, start)
    # from [2, 2, 2]: unit 0 -> 0 (drop 7) gives 122.5 bytes > 110; unit 1 -> 0 (drop 6, 92.5 bytes) is the
    # best move that fits. Then unit 0 -> 1 (117.5) and unit 2 -> 0 (115) do not fit, unit 2 -> 1 gains 0: stop
    np.testing.assert_array_equal(raised, [2, 0, 2])
    assert objective(problem, raised) == 11.0
    assert resource_values(problem, raised)["weights_memory"] == 92.5 <= 110.0
    assert objective(problem, raised) < objective(problem, start)
    best, best_choice = brute_force(problem)
    assert objective(problem, solve(problem)) == best
    assert objective(problem, greedy_raise(problem, best_choice)) == best
    # no budget at all: every unit climbs to its best candidate
    free = MixedPrecisionProblem(sens, rows, {})
    np.testing.assert_array_equal(greedy_raise(free, start), [0, 0, 0])
    tie = MixedPrecisionProblem([np.array([1.0, 0.0, 0.0])], [], {})
    np.testing.assert_array_equal(greedy_raise(tie, [2]), [2])  # equal sensitivity: not a strict gain
    np.testing.assert_array_equal(solve(free), [0, 0, 0])


def test_trivial_problems():
    assert solve(MixedPrecisionProblem([], [], {"bops": 1.0})).shape == (0,)
    single = MixedPrecisionProblem([np.array([3.0]), np.array([2.0, 1.0, 1.5])],
                                   [ResourceRow("bops", 5.0, {0: np.array([4.0]), 1: np.array([3.0, 2.0, 1.0])})],
                                   {"bops": 11.0})  # fmt: skip
    np.testing.assert_array_equal(solve(single), [0, 1])  # 5 + 4 + 2 = 11
    with pytest.raises(InfeasibleTargetError) as info:
        solve(MixedPrecisionProblem(single.sensitivity, single.rows, {"bops": 9.0}))
    assert info.value.reachable == 10.0
    # without a budget: argmin per unit, ties to the lowest index
    free = MixedPrecisionProblem([np.array([3.0]), np.array([2.0, 1.0, 1.0])], single.rows, {"other": 1.0})
    np.testing.assert_array_equal(solve(free), [0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rows": [ResourceRow("w", terms={0: np.ones(2)})]}, r"row 0 \('w'\): term of unit 0 has shape \(2,\)"),
        ({"rows": [ResourceRow("w", terms={5: np.ones(3)})]}, r"row 0 \('w'\): unit 5 out of range \[0, 2\)"),
        ({"rows": [ResourceRow("w"), ResourceRow("b", pairs={(0, 1): np.ones((3, 3))})]},
         r"row 1 \('b'\): pair \(0, 1\) has shape \(3, 3\), expected \(3, 2\)"),
        ({"rows": [ResourceRow("b", pairs={(1, 1): np.ones((2, 2))})]}, r"pair \(1, 1\) must name two different"),
        ({"rows": [ResourceRow("w", terms={1: np.array([1.0, np.nan])})]}, r"term of unit 1 contains NaN"),
        ({"rows": [ResourceRow("w", constant=np.nan)]}, r"row 0 \('w'\): constant is nan"),
        ({"sensitivity": [np.ones(3), np.array([np.nan, 0.0])]}, r"sensitivity of unit 1 contains NaN"),
        ({"sensitivity": [np.ones(3), np.ones((2, 1))]}, r"sensitivity of unit 1 must be a non-empty 1-D"),
        ({"budgets": {"w": np.nan}}, r"budget of 'w' is NaN"),
    ],
)  # fmt: skip
def test_validation_errors(kwargs, match):
    args = {"sensitivity": [np.ones(3), np.ones(2)], "rows": [], "budgets": {}} | kwargs
    with pytest.raises(ValueError, match=match):
        MixedPrecisionProblem(**args)


def test_bad_choice_is_rejected():
    with pytest.raises(ValueError, match="does not match the candidate counts"):
        evaluate(weights_problem(100.0), [0, 3])


def large_problem(n_units: int = 150, n_act_rows: int = 20, seed: int = 0) -> MixedPrecisionProblem:
    """Realistic scale: bytes up to ~1e7, BOPs up to ~1e12; 3 candidates (8/4/2 bits) per unit."""
    rng = np.random.default_rng(seed)
    bits = np.array([8.0, 4.0, 2.0])
    params = rng.integers(1_000, 600_000, n_units).astype(float)
    macs = rng.integers(100_000, 50_000_000, n_units).astype(float)
    acts = rng.integers(1_000, 400_000, n_units).astype(float)
    sens = [np.array([0.0, *np.sort(rng.uniform(0, 1e-3, 2))]) for _ in range(n_units)]
    weights = ResourceRow("weights_memory", terms={u: params[u] * bits / 8 for u in range(n_units)})
    # BOPs of layer u + 1: MACs x its weight bits (choice of u + 1) x its input activation bits (choice of u)
    bops = ResourceRow(
        "bops", pairs={(u, u + 1): macs[u + 1] * np.outer(bits, bits) for u in range(n_units - 1)}
    )
    cuts = [rng.choice(n_units, size=12, replace=False) for _ in range(n_act_rows)]
    act_rows = [
        ResourceRow("activation_memory", terms={int(u): acts[u] * bits / 8 for u in cut}) for cut in cuts
    ]
    problem = MixedPrecisionProblem(sens, [weights, bops, *act_rows], {})
    lo = {r: min_reachable(problem, r) for r in ("weights_memory", "bops", "activation_memory")}
    hi = evaluate(problem, np.zeros(n_units, dtype=int))
    return MixedPrecisionProblem(sens, problem.rows, {r: lo[r] + 0.45 * (hi[r] - lo[r]) for r in lo})


def test_large_problem_is_fast_and_feasible():
    problem = large_problem()
    t0 = time.perf_counter()
    choice = solve(problem)
    elapsed = time.perf_counter() - t0
    print(f"\nsolve: 150 units x 3 candidates, 149 BOPs pairs, 20 activation rows: {elapsed:.2f} s")
    assert elapsed < 10.0
    assert fits(problem, choice)
    vals = resource_values(problem, choice)
    assert vals["bops"] > 1e11  # the scale the rescaling has to cope with
    # the budgets bind: with no budget the objective would be 0 (all 8-bit)
    assert objective(problem, choice) > 0
    t0 = time.perf_counter()
    raised = greedy_raise(problem, choice)
    print(f"greedy_raise on the optimum: {time.perf_counter() - t0:.2f} s")
    assert fits(problem, raised)
    assert objective(problem, raised) == pytest.approx(objective(problem, choice), rel=1e-6)
    # a greedy start from all-2-bit is feasible and must end no better than the optimum
    low = greedy_raise(problem, np.full(150, 2))
    assert fits(problem, low)
    assert objective(problem, choice) <= objective(problem, low) * (1 + 1e-6)


def test_solution_within_solver_tolerance_but_over_budget_is_cut_off(monkeypatch):
    import kerasq.mixed_precision.solver as solver_mod

    # HiGHS with a loose tolerance accepts [0, 0] (1e-6 relative over budget); solve must never return it
    monkeypatch.setitem(solver_mod._HIGHS, "primal_feasibility_tolerance", 1e-4)
    monkeypatch.setitem(solver_mod._HIGHS, "mip_feasibility_tolerance", 1e-4)
    rows = [ResourceRow("weights_memory", terms={0: np.array([60.0001, 30.0]), 1: np.array([40.0, 30.0])})]
    problem = MixedPrecisionProblem(
        [np.array([0.0, 1.0]), np.array([0.0, 2.0])], rows, {"weights_memory": 100.0}
    )
    choice = solve(problem)
    np.testing.assert_array_equal(choice, [1, 0])  # 70 bytes, sens 1
    assert evaluate(problem, choice)["weights_memory"] <= 100.0
