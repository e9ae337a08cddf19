"""The LP floor: the master problem (`master.py`: memory exact, the step time as the maximum over the
seed paths, `paths.seed_paths`) with its integers relaxed to reals, solved by GLOP.

Where the discrete floor (`floor.py`) prices each rank alone, the LP sees how ranks share the layers:
with interleaving, a rank's bubble is made of the other ranks' chunks (`paths._round_paths`), so a
partition cannot shrink one rank's bubble without lengthening another's. Llama 3 405B tp8-pp16 v2 on
8x2048 H100 with 16 micro-batches: discrete floor 5.71 s/step, LP floor 7.11.

The bound is exact arithmetic, not GLOP's floating-point optimum: any row multipliers y of the right
signs prove `T >= sum_i y_i b_i + sum_j min over x_j's domain of (c_j - y a_j) x_j` (weak duality), so
GLOP's duals are checked in exact integer arithmetic (`SCALE`). A poor or
failed LP solve can only weaken the bound, never make it exceed the optimum.
"""
from __future__ import annotations

import math
from fractions import Fraction

from ortools.linear_solver import pywraplp

from planner.search.budget import (WORK_PER_CUT_RESOLVE, WORK_PER_KELLEY_NONZERO, WORK_PER_KELLEY_ROW, WORK_PER_KELLEY_ROW_CHUNK,
                                   WORK_PER_LP_NONZERO, WORK_PER_PATH_ACTION, Budget)
from planner.search.cuts import Probe, separate
from planner.search.master import build_master
from planner.search.units import unit_of
from planner.search.partition import Problem
from planner.search.paths import key, pool, seed_paths

__all__ = ["lp_floor", "path_floor", "Kelley", "solve_lp", "linear_model", "path_row", "add_row", "glop_model", "column_scales", "certify", "duals", "NOTHING_FITS", "ATTEMPTS"]

IN_OUT = 0.8
"""Kelley's paths are sought at this share of the way from the LP's point back to its earlier points
(in-out separation, Ben-Ameur and Neto 2007): the LP's optima jump between vertices, and paths found
nearer the middle of where they have been cut deeper. To no cut left (2026-12-04): GPT-3 175B tp4-pp8
v3 at (11,12,12,12,12,13,13,11) 184 -> 122 rounds, 4.6 -> 2.5 s, 782 -> 450 paths; Llama 3 405B
tp8-pp16-dp2x64 v3 172 -> 129 rounds, 9.1 -> 6.1 s; Llama 3 70B tp4-pp4 v4 at (20,20,21,19) 1.0 -> 0.6 s,
366 -> 207 paths; the same floors (at 0.5: 2.6, 7.0 and 0.7 s). Searches at 60 s: Llama 3 405B on 8x2048
7.443 -> 7.322 s/step (gap 8.2 -> 6.7%), GPT-3 175B's gap 0.5 -> 0.4%."""
NOTHING_FITS = 2 ** 62
"""The floor when the LP proves that no assignment fits in memory."""
SCALE = 2 ** 200
"""Dual multipliers times SCALE are integers: multiplying a float by a power of two is exact, so each is
GLOP's own value (down to 2 ** -147) and the check is exact arithmetic on Python integers."""


def lp_floor(p: Problem) -> tuple[int, int]:
    """A lower bound (problem time units) on every assignment's step time, 0 when the LP says nothing;
    and the LP's nonzeros (what it cost, `budget.WORK_PER_LP_NONZERO`). Identical blocks only: the
    general encoding reads its chunks' sums off tables (element constraints), which the LP drops, and
    without them nothing ties a chunk's time to its layers (the floor would be 0)."""
    if not p.uniform() or p.fixed_bounds:
        return 0, 0
    _, unit, (rows, objective, domains), _ = linear_model(p)
    size = sum(len(coef) for coef, _, _ in rows)
    duals = _solve(rows, objective, domains, elastic=False)
    if duals is not None:
        return max(0, math.ceil(certify(rows, objective, domains, duals))) * unit, size
    # no optimum: if the LP is infeasible, its elastic version's duals prove it (nothing fits)
    duals = _solve(rows, objective, domains, elastic=True)
    if duals is not None and certify(rows, {}, domains, duals) > 0:
        return NOTHING_FITS, size
    return 0, size


def path_floor(p: Problem, paths: dict, budget: Budget) -> tuple[int, bool]:
    """`lp_floor` over the round paths, `paths`, and the path cuts (`cuts.separate`) found while `budget`
    lasts (each joins `paths`, for the master that goes on from them): Kelley's cutting planes, each
    round's bound certified, the best returned (problem units; 0 when the LP says nothing); and whether
    no cut is left. GPT-3 175B tp4-pp8 v3 at the totals (11,12,12,12,12,13,13,11): 45.63 -> 45.87
    s/step in 134 rounds; its optimum is 46.098."""
    if not p.uniform() or p.fixed_bounds:
        return 0, True
    kelley = Kelley(p, paths, budget)
    done = kelley.run(budget)
    return kelley.bound(), done


class Kelley:
    """`path_floor`'s LP kept between calls, so that a caller may add paths of its own (`add`) and read
    the LP's point (`point`) between rounds (`dive.py`). Identical blocks only (`lp_floor`)."""

    def __init__(self, p: Problem, paths: dict, budget: Budget):
        self.paths = paths
        self.master, self.unit, (self.rows, self.objective, self.domains), self.probe = linear_model(p, paths, probe=True)
        self.orders = p.orders()
        self.chunks = p.chunks
        self.actions = sum(len(o) for o in self.orders)
        self.size = sum(len(coef) for coef, _, _ in self.rows)
        self.lp, self.cons, self.scales = glop_model(self.rows, self.objective, self.domains)
        self.x = self.lp.variables()
        self.col, self.best, self.values = column_scales(self.domains), Fraction(0), None
        self.center: dict | None = None
        """The LP's earlier points, smoothed (`_separate`)."""
        x = self.master.x
        self.times = self.probe.columns()
        """The chunk times' columns (and sends, end terms, T): what `separate` simulates."""
        self.read = self.times + [v.index for vs in (x.blocks, x.full, x.sel) for v in vs]
        """The columns read at each optimum: the chunk times `separate` simulates, and the point's."""
        budget.spend(WORK_PER_KELLEY_NONZERO * self.size)  # built, read back, first solved (budget.py)

    def run(self, budget: Budget, rounds: int | None = None) -> bool:
        """Kelley rounds while `budget` lasts (at most `rounds` separations): whether no cut is left (or
        GLOP solves nothing, which ends it too)."""
        done = False
        while True:
            if solve_lp(self.lp) != pywraplp.Solver.OPTIMAL:  # going on from its basis ends ABNORMAL at times: anew
                budget.spend(WORK_PER_LP_NONZERO * self.size)
                self.lp, self.cons, self.scales = glop_model(self.rows, self.objective, self.domains)
                self.x = self.lp.variables()
                if solve_lp(self.lp) != pywraplp.Solver.OPTIMAL:
                    return True
            self.best = max(self.best, certify(self.rows, self.objective, self.domains, duals(self.cons, self.scales)))
            self.values = {i: self.x[i].solution_value() * self.col[i] for i in self.read}
            if budget.spent() or rounds == 0:
                return done
            rounds = None if rounds is None else rounds - 1
            found = self._separate(budget)
            if not found:
                return True
            for r, counts in found:
                self.add(r, counts, budget)
            budget.spend(WORK_PER_CUT_RESOLVE * self.size)  # GLOP goes on from its last basis

    def _separate(self, budget: Budget) -> list:
        """The paths the LP's point violates, sought first at a point between it and the smoothed
        earlier points (`center`, IN_OUT), then, if none is found there, at the point itself: no cut
        is left only when the point itself has none. The center then moves towards the point."""
        found = []
        if self.center is not None:
            at = {i: IN_OUT * self.center[i] + (1 - IN_OUT) * self.values[i] for i in self.times}
            budget.spend(WORK_PER_PATH_ACTION * self.actions)
            found = separate(self.probe, self.orders, self.values, self.paths, at)
            self.center = at
        else:
            self.center = {i: self.values[i] for i in self.times}
        if not found:
            budget.spend(WORK_PER_PATH_ACTION * self.actions)
            found = separate(self.probe, self.orders, self.values, self.paths)
        return found

    def add(self, r: int, counts, budget: Budget) -> None:
        """Rank r's path `counts` as a row of the LP (and into `paths`), unless it is there already;
        charged to `budget` (budget.py)."""
        k = key(r, counts)
        if k in self.paths:  # its row is in the LP already
            return
        budget.spend(WORK_PER_KELLEY_ROW + WORK_PER_KELLEY_ROW_CHUNK * self.chunks)
        self.paths[k] = counts
        row = path_row(self.master, r, counts)
        con, scale = add_row(self.lp, self.x, self.col, row)
        self.rows.append(row)
        self.cons.append(con)
        self.scales.append(scale)
        self.size += len(row[0])

    def bound(self) -> int:
        """The best certified bound so far, problem units."""
        return max(0, math.ceil(self.best)) * self.unit

    def point(self) -> tuple[list[float], list[float], list[float]] | None:
        """Per chunk: blocks, blocks under full and under selective recompute at the LP's last optimum."""
        if self.values is None:
            return None
        x = self.master.x
        return tuple([self.values[v.index] for v in vs] for vs in (x.blocks, x.full, x.sel))


def solve_lp(lp) -> int:
    """GLOP's status, trying each of ATTEMPTS in turn while it ends neither OPTIMAL nor INFEASIBLE
    (ABNORMAL on some Llama 3 405B boxes, and going on from a basis after rows were added), back to the
    first setting after."""
    for params in ATTEMPTS:
        lp.SetSolverSpecificParametersAsString(params)
        status = lp.Solve()
        if status in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.INFEASIBLE):
            break
    if params != ATTEMPTS[0]:
        lp.SetSolverSpecificParametersAsString(ATTEMPTS[0])
    return status


def linear_model(p: Problem, extra: dict | None = None, probe: bool = False):
    """The master of `p` over every round path and the paths in `extra` (`build_master`), its unit, its
    linear rows (`_linear`): what the LP floor solves, for callers that add rows of their own; and with
    `probe`, its chunk times as columns (`cuts.Probe`, for path cuts; else None)."""
    orders = p.orders()
    vectors = p.vectors()
    paths = pool(seed_paths(p.pp, p.vpp, p.micro_batches, orders, rounds=True))
    paths.update(extra or {})
    unit = unit_of(p)
    master = build_master(p, unit, orders, vectors, paths, None, None)
    columns = Probe(master) if probe else None
    return master, unit, _linear(master.m.proto), columns


def path_row(master, r: int, counts) -> tuple[dict[int, int], int | None, int | None]:
    """Rank r's path `counts` added to `master` (`_Master.add_path`), as a linear row of its LP."""
    master.add_path(r, counts)
    rows = master.m.proto.constraints
    return _row(rows[len(rows) - 1])  # this repeated field has no [-1] (ortools 9.15: a crash)


def _linear(proto) -> tuple[list, dict[int, int], list[tuple[int, int]]]:
    """The proto's plain linear rows as (coefficients {var: int}, lower, upper) with negated literals
    folded into the bounds; rows of any other kind are dropped (fewer rows: still a relaxation)."""
    rows = [_row(c) for c in proto.constraints if c.has_linear() and not len(c.enforcement_literal)]
    objective = dict(zip(proto.objective.vars, proto.objective.coeffs))
    domains = [(list(v.domain)[0], list(v.domain)[-1]) for v in proto.variables]
    return rows, objective, domains


def _row(c) -> tuple[dict[int, int], int | None, int | None]:
    """One plain linear constraint of a proto as (coefficients, lower, upper), negated literals folded in."""
    coef: dict[int, int] = {}
    shift = 0
    for v, a in zip(c.linear.vars, c.linear.coeffs):
        if v < 0:  # not(x) = 1 - x
            shift += a
            coef[-v - 1] = coef.get(-v - 1, 0) - a
        else:
            coef[v] = coef.get(v, 0) + a
    d = list(c.linear.domain)
    lo = d[0] - shift if d[0] > -2 ** 62 else None
    hi = d[-1] - shift if d[-1] < 2 ** 62 else None
    return coef, lo, hi


def _solve(rows, objective, domains, elastic: bool) -> list[float] | None:
    """GLOP's row duals for the scaled LP, mapped back to the unscaled rows; None when no setting in
    ATTEMPTS finds an optimum. `elastic`: every row may be violated at a price (the scaled violation),
    and the objective is that price alone: its duals are a Farkas certificate when the LP is infeasible
    (`certify` with no objective is then positive)."""
    for params in ATTEMPTS:
        duals = _glop(rows, objective, domains, params, elastic)
        if duals is not None:
            return duals
    return None


ATTEMPTS = ("use_preprocessing:false use_dual_simplex:true", "", "use_scaling:false", "use_dual_simplex:true")
"""GLOP settings tried in turn. The first: most solves go on from the last basis after rows were added
(Kelley's path cuts) or bounds changed (`totals.branches`), which dual simplex does in a few pivots, and
GLOP's preprocessing, on by default, rewrites the LP at every solve and loses the basis. GLOP's time in
the 60 s searches of benchmarks/search.py (2026-12-04, before -> after): Kelley's re-solves 10.7 -> 3.4 s
(GPT-3 175B), 3.0 -> 1.0 (Llama 3 70B), 8.0 -> 4.4 (GPT 1T), 6.5 -> 2.0 (Llama 3 405B); `branches` on
405B 2.5 -> 0.6 s; fresh LP floors (`lp_floor`) about the same (405B's 80: 3.74 -> 3.71 s; 175B's 18: 0.48
-> 0.67 s). The others: the rows mix bytes (1e11) and time units, and
GLOP's own scaling sometimes ends ABNORMAL where another setting solves the same LP (seen on Llama 3
405B at pp 16 v4). Every bound is certified whatever GLOP says (`certify`)."""


def _glop(rows, objective, domains, params: str, elastic: bool) -> list[float] | None:
    """One GLOP solve of `glop_model`: the row duals mapped back to the unscaled rows, or None."""
    lp, cons, scales = glop_model(rows, objective, domains, params, elastic)
    if lp.Solve() != pywraplp.Solver.OPTIMAL:
        return None
    return duals(cons, scales)


def duals(cons, scales) -> list[float]:
    """The row duals of a solved `glop_model`, mapped back to the unscaled rows."""
    return [c.dual_value() / s for c, s in zip(cons, scales)]


def glop_model(rows, objective, domains, params: str | None = None, elastic: bool = False):
    """The LP of `rows` in GLOP, each column divided by its domain's largest end (at most 1e7), each row
    by its largest scaled coefficient: the solver, its row constraints and each row's scale (a row's
    dual over its scale is the unscaled row's). `elastic`: see `_solve`."""
    lp = pywraplp.Solver.CreateSolver("GLOP")
    lp.SetSolverSpecificParametersAsString(ATTEMPTS[0] if params is None else params)
    inf = lp.infinity()
    col = column_scales(domains)
    x = [lp.NumVar(lo / s, hi / s, "") for (lo, hi), s in zip(domains, col)]
    cons, scales, slacks = [], [], []
    for coef, lo, hi in rows:
        row, s = add_row(lp, x, col, (coef, lo, hi))
        if elastic:
            slack = (lp.NumVar(0, inf, ""), lp.NumVar(0, inf, ""))
            row.SetCoefficient(slack[0], 1)
            row.SetCoefficient(slack[1], -1)
            slacks += slack
        cons.append(row)
        scales.append(s)
    goal = lp.Objective()
    for v, a in ({} if elastic else objective).items():
        goal.SetCoefficient(x[v], a * col[v])
    for y in slacks:
        goal.SetCoefficient(y, 1)
    goal.SetMinimization()
    return lp, cons, scales


def add_row(lp, x, col, row) -> tuple:
    """`row` (coefficients, lower, upper) added to `glop_model`'s LP over columns `x` scaled by `col`:
    the constraint and its scale (its largest scaled coefficient)."""
    coef, lo, hi = row
    inf = lp.infinity()
    s = max((abs(a * col[v]) for v, a in coef.items()), default=1)
    con = lp.RowConstraint(-inf if lo is None else lo / s, inf if hi is None else hi / s, "")
    for v, a in coef.items():
        con.SetCoefficient(x[v], a * col[v] / s)
    return con, s


def column_scales(domains) -> list[int]:
    """What `glop_model` divides each column by: its domain's largest end, at most 1e7."""
    return [max(1, min(max(abs(lo), abs(hi)), 10 ** 7)) for lo, hi in domains]


def certify(rows, objective, domains, duals) -> Fraction:
    """Weak duality in exact arithmetic: a row's multiplier keeps only the sign its finite bound allows
    (y > 0 proves `>= lo`, y < 0 proves `<= hi`); each variable then takes the end of its domain that
    minimises its reduced cost's contribution."""
    total = 0
    reduced = {v: a * SCALE for v, a in objective.items()}
    for (coef, lo, hi), y in zip(rows, duals):
        k = round(y * SCALE)
        if (k > 0 and lo is None) or (k < 0 and hi is None) or k == 0:
            continue
        total += k * (lo if k > 0 else hi)
        for v, a in coef.items():
            reduced[v] = reduced.get(v, 0) - k * a
    for v, d in reduced.items():
        lo, hi = domains[v]
        total += min(d * lo, d * hi)
    return Fraction(total, SCALE)
