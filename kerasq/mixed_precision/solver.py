"""Mixed-precision bit allocation as an integer program (cvxpy + HiGHS).

Each unit (a kernel or an activation tensor) has ``n_u`` candidates, index 0 being the highest bit width.
One candidate is chosen per unit so that the summed sensitivity is minimal while every budgeted resource
stays within its budget. Resources are linear in the one-hot choice ``x`` plus pair terms (BOPs depend on
the weight bits *and* the input activation bits); a pair ``(u, v)`` is linearized exactly by a continuous
``z`` with row sums ``x_u`` and column sums ``x_v``, which forces ``z = outer(x_u, x_v)`` for one-hot ``x``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cvxpy as cp
import cvxpy.settings as cps
import numpy as np
import scipy.sparse as sp

from kerasq.errors import ConfigError

_RTOL = 1e-9  # a value "fits" a budget when value <= budget + _RTOL * max(|budget|, |value|)
_MAX_CUTS = 20  # re-solves that cut off a solution HiGHS accepted within its own float tolerance
_HIGHS = {"mip_rel_gap": 1e-9, "mip_abs_gap": 1e-12, "primal_feasibility_tolerance": 1e-9,
          "mip_feasibility_tolerance": 1e-9}  # fmt: skip
Choice = Sequence[int] | np.ndarray  # a candidate index per unit


@dataclass(frozen=True)
class ResourceRow:
    """One linear resource expression of the choice:
    ``constant + sum_u terms[u][c_u] + sum_(u,v) pairs[(u, v)][c_u, c_v]``."""

    resource: str  # "weights_memory" | "activation_memory" | "total_memory" | "bops" | any string
    constant: float = 0.0
    terms: Mapping[int, np.ndarray] = field(default_factory=dict)  # unit -> cost per candidate, (n_u,)
    pairs: Mapping[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (u, v) -> (n_u, n_v)


@dataclass(frozen=True)
class MixedPrecisionProblem:
    """Sensitivity per unit and candidate, resource rows and budgets.

    Every row of a budgeted resource must be ``<= budget``, so a resource with several rows is a max over
    rows (activation memory = max over schedule cuts). Rows of a resource without a (finite) budget are
    ignored by the solver but reported by :func:`evaluate`; budgets of resources without rows are ignored.
    """

    sensitivity: Sequence[np.ndarray]
    rows: Sequence[ResourceRow] = ()
    budgets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = []
        for u, s in enumerate(self.sensitivity):
            s = np.asarray(s, dtype=float)
            if s.ndim != 1 or s.size == 0:
                raise ValueError(
                    f"sensitivity of unit {u} must be a non-empty 1-D array, got shape {s.shape}"
                )
            if not np.isfinite(s).all():
                raise ValueError(f"sensitivity of unit {u} contains NaN or inf: {s}")
            sizes.append(s.size)
        n_units = len(sizes)

        def unit(u: int, where: str) -> int:
            if not (isinstance(u, int | np.integer) and 0 <= u < n_units):
                raise ValueError(f"{where}: unit {u!r} out of range [0, {n_units})")
            return sizes[u]

        for r, row in enumerate(self.rows):
            where = f"row {r} ({row.resource!r})"
            if not np.isfinite(row.constant):
                raise ValueError(f"{where}: constant is {row.constant}")
            for u, t in row.terms.items():
                t, n = np.asarray(t, dtype=float), unit(u, where)
                if t.shape != (n,):
                    raise ValueError(f"{where}: term of unit {u} has shape {t.shape}, expected ({n},)")
                if not np.isfinite(t).all():
                    raise ValueError(f"{where}: term of unit {u} contains NaN or inf")
            for key, m in row.pairs.items():
                if len(key) != 2 or key[0] == key[1]:
                    raise ValueError(f"{where}: pair {key!r} must name two different units")
                m, shape = np.asarray(m, dtype=float), (unit(key[0], where), unit(key[1], where))
                if m.shape != shape:
                    raise ValueError(f"{where}: pair {key} has shape {m.shape}, expected {shape}")
                if not np.isfinite(m).all():
                    raise ValueError(f"{where}: pair {key} contains NaN or inf")
        for res, b in self.budgets.items():
            if np.isnan(b):
                raise ValueError(f"budget of {res!r} is NaN")


class InfeasibleTargetError(ConfigError):
    """No choice meets the budget(s) of ``target_resource_utilization``. ``resource`` names the resource (``"a+b"`` when each budget is
    reachable alone but not jointly), ``requested`` is its budget and ``reachable`` the smallest value any
    choice reaches with the other budgets ignored (both NaN for a joint infeasibility)."""

    def __init__(self, resource: str, requested: float, reachable: float, message: str | None = None):
        self.resource, self.requested, self.reachable = resource, float(requested), float(reachable)
        if message is None:
            message = (
                f"{resource} budget {requested:.10g} is below {reachable:.10g}, the smallest {resource} "
                f"any bit-width choice reaches; raise the {resource} budget to at least {reachable:.10g}"
            )
        super().__init__(message)


@dataclass
class _Program:
    """Rows compiled to sparse matrices over the stacked one-hot ``x`` (N) and pair products ``z`` (Z)."""

    sizes: np.ndarray  # (U,) candidates per unit
    offsets: np.ndarray  # (U,) start of each unit in x
    pairs: np.ndarray  # (P, 2) pair units, u < v
    zoff: np.ndarray  # (P + 1,) start of each pair block (row-major n_u x n_v) in z
    G: sp.csr_matrix  # (R, N)
    H: sp.csr_matrix  # (R, Z)
    const: np.ndarray  # (R,)
    resources: list[str]  # (R,)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _compile(problem: MixedPrecisionProblem, rows: Sequence[ResourceRow]) -> _Program:
    sizes = np.array([np.size(s) for s in problem.sensitivity], dtype=int)
    offsets = np.concatenate([[0], np.cumsum(sizes)])[:-1]
    keys = sorted({(min(k), max(k)) for row in rows for k in row.pairs})
    pairs = np.array(keys, dtype=int).reshape(-1, 2)
    zoff = np.concatenate([[0], np.cumsum(sizes[pairs[:, 0]] * sizes[pairs[:, 1]])]).astype(int)
    index = {k: p for p, k in enumerate(keys)}
    gr, gc, gv, hr, hc, hv = ([] for _ in range(6))  # (row, column, value) triplets; duplicates are summed
    for r, row in enumerate(rows):
        for u, t in row.terms.items():
            gr.append(np.full(sizes[u], r))
            gc.append(offsets[u] + np.arange(sizes[u]))
            gv.append(np.ravel(t))
        for (u, v), m in row.pairs.items():
            m = np.asarray(m, dtype=float) if u < v else np.asarray(m, dtype=float).T
            p = index[(min(u, v), max(u, v))]
            hr.append(np.full(m.size, r))
            hc.append(zoff[p] + np.arange(m.size))
            hv.append(m.ravel())
    G = sp.csr_matrix((_cat(gv, float), (_cat(gr, int), _cat(gc, int))), shape=(len(rows), int(sizes.sum())))
    H = sp.csr_matrix((_cat(hv, float), (_cat(hr, int), _cat(hc, int))), shape=(len(rows), int(zoff[-1])))
    const = np.array([row.constant for row in rows], dtype=float)
    return _Program(
        sizes=sizes,
        offsets=offsets,
        pairs=pairs,
        zoff=zoff,
        G=G,
        H=H,
        const=const,
        resources=[row.resource for row in rows],
    )


def _values(prog: _Program, choices: np.ndarray) -> np.ndarray:
    """Row values, shape (R, M), of M choices given as an (M, U) int array."""
    m, n_units = choices.shape
    cols = np.repeat(np.arange(m), n_units)
    x = sp.csr_matrix(
        (np.ones(m * n_units), ((prog.offsets + choices).ravel(), cols)), shape=(prog.G.shape[1], m)
    )
    u, v = prog.pairs.T
    zi = prog.zoff[:-1] + choices[:, u] * prog.sizes[v] + choices[:, v]  # (M, P)
    z = sp.csr_matrix(
        (np.ones(zi.size), (zi.ravel(), np.repeat(np.arange(m), len(u)))), shape=(prog.H.shape[1], m)
    )
    return prog.const[:, None] + (prog.G @ x).toarray() + (prog.H @ z).toarray()


def _fits(value: np.ndarray | float, budget: np.ndarray | float) -> np.ndarray:
    return np.asarray(value <= budget + _RTOL * np.maximum(np.abs(budget), np.abs(value)))


def _pad(prog: _Program, flat: np.ndarray, fill: float) -> np.ndarray:
    """Stacked per-candidate vector (N,) -> (U, max n_u) matrix padded with ``fill``."""
    out = np.full((len(prog.sizes), int(prog.sizes.max())), fill)
    unit = np.repeat(np.arange(len(prog.sizes)), prog.sizes)
    out[unit, np.arange(len(flat)) - prog.offsets[unit]] = flat
    return out


def _check_choice(problem: MixedPrecisionProblem, choice: Choice) -> np.ndarray:
    c = np.asarray(choice, dtype=int).reshape(-1)
    sizes = np.array([np.size(s) for s in problem.sensitivity], dtype=int)
    if c.shape != sizes.shape or (c < 0).any() or (c >= sizes).any():
        raise ValueError(f"choice {c.tolist()} does not match the candidate counts {sizes.tolist()}")
    return c


def _budgeted(problem: MixedPrecisionProblem) -> tuple[list[ResourceRow], dict[str, float]]:
    present = {row.resource for row in problem.rows}
    budgets = {r: float(b) for r, b in problem.budgets.items() if r in present and np.isfinite(b)}
    return [row for row in problem.rows if row.resource in budgets], budgets


def evaluate(problem: MixedPrecisionProblem, choice: Choice) -> dict[str, float]:
    """Value of every resource (max over its rows) for ``choice``."""
    c = _check_choice(problem, choice)
    prog = _compile(problem, problem.rows)
    vals = _values(prog, c[None])[:, 0]
    names = np.array(prog.resources, dtype=object)
    return {r: float(vals[names == r].max()) for r in dict.fromkeys(prog.resources)}


def _model(prog: _Program, scale: np.ndarray) -> tuple[cp.Variable, list, cp.Expression]:
    """Boolean stacked ``x``, structural constraints (one-hot per unit, pair marginals) and the row
    expressions ``(G x + H z) / scale``."""
    n, nz, n_units = prog.G.shape[1], prog.H.shape[1], len(prog.sizes)
    x = cp.Variable(n, boolean=True)
    onehot = sp.csr_matrix(
        (np.ones(n), (np.repeat(np.arange(n_units), prog.sizes), np.arange(n))), shape=(n_units, n)
    )
    cons = [onehot @ x == 1]
    d = sp.diags(1.0 / scale)
    expr = (d @ prog.G) @ x
    if nz:
        rz, cz, rx, cx, k = [], [], [], [], 0
        for p, (u, v) in enumerate(prog.pairs):
            nu, nv = prog.sizes[u], prog.sizes[v]
            i, j = np.divmod(np.arange(nu * nv), nv)
            zi = prog.zoff[p] + np.arange(nu * nv)
            rz += [k + i, k + nu + j]
            cz += [zi, zi]
            rx += [k + np.arange(nu + nv)]
            cx += [np.concatenate([prog.offsets[u] + np.arange(nu), prog.offsets[v] + np.arange(nv)])]
            k += nu + nv
        mz = sp.csr_matrix((np.ones(2 * nz), (_cat(rz, int), _cat(cz, int))), shape=(k, nz))
        mx = sp.csr_matrix((np.ones(k), (_cat(rx, int), _cat(cx, int))), shape=(k, n))
        z = cp.Variable(nz, nonneg=True)
        cons.append(mz @ z == mx @ x)  # row sums = x_u, column sums = x_v  =>  z = outer(x_u, x_v)
        expr = expr + (d @ prog.H) @ z
    return x, cons, expr


_BANNER_SILENCED = False


def _silence_highs_banner() -> None:
    """HiGHS prints a copyright banner on the C-level stdout when its first instance is created; create that
    instance with stdout pointed at /dev/null so the CLI's and the user's output stay clean."""
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    _BANNER_SILENCED = True
    try:
        import highspy
    except ImportError:  # cvxpy reports the missing solver itself
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _run(
    prog: _Program, x: cp.Variable, objective: cp.Expression, cons: list, time_limit: float
) -> np.ndarray | None:
    """Solve with HiGHS; the decoded choice, or None when infeasible."""
    prob = cp.Problem(cp.Minimize(objective), cons)
    _silence_highs_banner()
    try:
        prob.solve(solver=cp.HIGHS, time_limit=float(time_limit), **_HIGHS)
    except cp.SolverError as e:
        raise RuntimeError(f"HiGHS failed on the bit-allocation program: {e}") from e
    if prob.status in (cps.INFEASIBLE, cps.INFEASIBLE_INACCURATE, cps.INFEASIBLE_OR_UNBOUNDED):
        return None
    if x.value is None:
        raise RuntimeError(
            f"HiGHS returned status {prob.status!r} without a solution (time_limit={time_limit}s)"
        )
    return np.argmax(_pad(prog, x.value, -np.inf), axis=1)


def _row_scale(prog: _Program, target: np.ndarray) -> np.ndarray:
    """Per-row divisor: the largest of |target - constant| and the row's coefficients."""
    scale = np.abs(target - prog.const)
    for m in (prog.G, prog.H):
        if m.nnz:
            scale = np.maximum(scale, abs(m).max(axis=1).toarray().ravel())
    return np.where(scale > 0, scale, 1.0)


def min_reachable(problem: MixedPrecisionProblem, resource: str, *, time_limit: float = 60.0) -> float:
    """Exact minimum over all choices of ``resource`` (max over its rows), other budgets ignored."""
    rows = [row for row in problem.rows if row.resource == resource]
    if not rows:
        raise ValueError(f"no row has resource {resource!r}")
    prog = _compile(problem, rows)
    if len(prog.sizes) == 0:
        return float(prog.const.max())
    if len(rows) == 1 and prog.H.nnz == 0:  # separable: every unit at its cheapest candidate
        choice = np.argmin(_pad(prog, prog.G.toarray()[0], np.inf), axis=1)
    else:  # minimize t subject to every row <= t, all rows on one common scale
        s = float(np.max(_row_scale(prog, np.zeros(len(rows)))))
        x, cons, expr = _model(prog, np.full(len(rows), s))
        t = cp.Variable()
        choice = _run(prog, x, t, [*cons, expr + prog.const / s <= t], time_limit)
    return float(_values(prog, choice[None]).max())


def solve(problem: MixedPrecisionProblem, *, time_limit: float = 60.0) -> np.ndarray:
    """Choice (int array, one candidate index per unit) of minimal total sensitivity within all budgets.

    Raises InfeasibleTargetError when one budget is below its reachable minimum, or when the budgets are
    each reachable but not together. The returned choice always satisfies every budget (up to a relative
    ``_RTOL``, checked in the original units). If ``time_limit`` stops HiGHS, its best incumbent is returned
    when it fits (then not proven optimal); without one a RuntimeError is raised.
    """
    sens = [np.asarray(s, dtype=float) for s in problem.sensitivity]
    rows, budgets = _budgeted(problem)
    if not sens or not rows:
        return np.array([int(np.argmin(s)) for s in sens], dtype=int)
    for res, b in budgets.items():
        reach = min_reachable(problem, res, time_limit=time_limit)
        if not _fits(reach, b):
            raise InfeasibleTargetError(res, b, reach)
    prog = _compile(problem, rows)
    bvec = np.array([budgets[r] for r in prog.resources])
    scale = _row_scale(prog, bvec)
    x, cons, expr = _model(prog, scale)
    # Within ``_fits``' tolerance, as the reachability check above: a budget a hair below the minimum that
    # check accepted must not be infeasible for HiGHS (the fit is checked exactly after each solve).
    slack = 2 * _RTOL * np.abs(bvec)
    cons.append(expr <= (bvec + slack - prog.const) / scale)
    obj = np.concatenate([s - s.min() for s in sens])  # per-unit shifts do not move the optimum
    obj = obj / obj.max() if obj.max() > 0 else obj
    for _ in range(_MAX_CUTS):
        choice = _run(prog, x, obj @ x, cons, time_limit)
        if choice is None:
            names = "+".join(budgets)
            msg = f"budgets {budgets} are each reachable alone but no choice meets them together; raise one of them"
            raise InfeasibleTargetError(names, np.nan, np.nan, msg)
        if _fits(_values(prog, choice[None])[:, 0], bvec).all():
            return choice
        cons.append(cp.sum(x[prog.offsets + choice]) <= len(sens) - 1)  # cut off the tolerance-only solution
    raise RuntimeError(f"no choice meeting the budgets exactly after {_MAX_CUTS} re-solves")


def greedy_raise(problem: MixedPrecisionProblem, choice: Choice) -> np.ndarray:
    """Repeatedly move the unit whose move to a higher-bit candidate (lower index) lowers total sensitivity
    the most while every budget still fits; stop when no such move exists."""
    c = _check_choice(problem, choice).copy()
    if c.size == 0:
        return c
    rows, budgets = _budgeted(problem)
    prog = _compile(problem, rows)
    bvec = np.array([budgets[r] for r in prog.resources])
    sens = _pad(prog, np.concatenate([np.asarray(s, dtype=float) for s in problem.sensitivity]), np.inf)
    units = np.arange(len(c))
    while True:
        drop = sens[units, c][:, None] - sens
        us, cs = np.nonzero((np.arange(sens.shape[1]) < c[:, None]) & (drop > 0))
        if us.size == 0:
            return c
        cand = np.repeat(c[None], us.size, axis=0)
        cand[np.arange(us.size), us] = cs
        ok = _fits(_values(prog, cand), bvec[:, None]).all(axis=0)
        if not ok.any():
            return c
        c = cand[np.argmax(np.where(ok, drop[us, cs], -np.inf))]
