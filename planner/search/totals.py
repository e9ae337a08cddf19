"""Branching on each pipeline rank's block total, each branch bounded by the LP floor (`relax.py`).

Over a whole interleaved candidate the LP floor is weak where integrality across the ranks binds, and
CP-SAT's master (`master.py`) is slow to prove it: GPT-3 175B tp4-pp8-dp4 interleaved v2 on 8x16 is
open at a 2.2% gap after a 60 s search. With every rank's block total fixed the LP is strong: 43.44
s/step with none fixed, 45.63 at the totals of the plan's partition (11,12,12,12,12,13,13,11), 48.05
with 12 blocks on every rank; and the master with the totals fixed (`Problem.totals`) is small work.

So an interleaved candidate, or one a first solve left open, is split (`solve`): branch and bound
over boxes of per-rank totals (`branches`; one GLOP model whose per-rank rows change bounds between
nodes, re-solved from the last basis), a box pruned when its bound reaches the step to beat; then,
when few compositions are left (MAX_LEAVES), the master solves each, least bound first, all sharing
the paths found and the incumbent; with more, the plain master goes on from the least of their
bounds. Nothing is pruned on GLOP's word alone: a bound is checked by weak duality in exact
arithmetic (`relax.certify`), an infeasible box by its elastic LP's Farkas certificate, and each
rank's range starts as the interval the LP allows it (two LPs a rank), which rules out most totals
that do not fit in memory before any box is solved.
"""
from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import Callable

from ortools.linear_solver import pywraplp

from planner.search import master
from planner.search.budget import WORK_PER_LP_NONZERO, WORK_PER_LP_RESOLVE, Budget
from planner.search.master import Warm
from planner.search.partition import Problem, Solution
from planner.search.relax import certify, column_scales, duals, glop_model, linear_model, path_floor, solve_lp

__all__ = ["solve", "branches"]

BRANCH_SHARE = 0.25
"""At most this share of a solve's budget goes to the search over totals; when it runs out first the
candidate is left to the plain master, with what is left."""
MAX_LEAVES = 4
"""More compositions than this are not solved one by one: the plain master goes on, told the least of
their bounds. Each composition's master gets an equal share, and many small shares prove less than
one large one. With LP floors alone, Llama 3 70B tp4-pp4 v3 on 8x16 had 4 compositions below 82.11
s/step (LP 81.03-81.12), none finished one by one in a 60 s search and the plan went from 82.04 to
82.11 s/step, so the limit was 3. Since each composition starts from its path floor and the paths
(81.54-81.82 s/step; `PATH_SHARE`), the same 4 solved one by one give 81.80 s/step and a 0.31% gap,
against 81.97 and 0.6% with the plain master (2026-12-03; GPT-3 175B tp4-pp8 has one composition)."""


PATH_SHARE = 0.7
"""Of a composition's share, what its path floor (`relax.path_floor`: the LP with the path cuts it finds)
may use before its master: the master starts from that bound and those paths. GPT-3 175B tp4-pp8 v3 at
(11,12,12,12,12,13,13,11): the LP floor 45.55, the path floor 45.87 (3.6 s), the optimum 46.098; the
master's first proposal went from 45.23 to 46.10 s/step. Searches at 60 s (2026-12-03), share 0.3 / 0.5
/ 0.7 / 0.9: 175B gap 0.71 / 0.69 / 0.65 / 0.64%, Llama 3 70B 0.31 / 0.19 / 0.09 / 0.14%."""


class _Tree:
    """The LP floor of `p` in GLOP with one more row per rank, the sum of its chunks' blocks: `bound`
    confines each rank's total to a box by re-bounding those rows."""

    def __init__(self, p: Problem):
        m, self.unit, (rows, self.objective, self.domains), _ = linear_model(p)
        self.base, self.pp = len(rows), p.pp
        self.mine = [[m.x.blocks[c].index for c in range(r, p.chunks, p.pp)] for r in range(p.pp)]
        self.rows = rows + [({v: 1 for v in vs}, None, None) for vs in self.mine]
        self.lp, self.cons, self.scales = glop_model(self.rows, self.objective, self.domains)
        self.col = column_scales(self.domains)
        self.elastic = None
        self.size = sum(len(coef) for coef, _, _ in self.rows)

    def _fix(self, cons, box) -> list:
        """Bound the rank rows of `cons` by `box` (per rank: least and most blocks; () frees them all);
        the rows as bounded, for `certify`."""
        rows, inf = list(self.rows), self.lp.infinity()
        for r in range(self.pp):
            k, s = self.base + r, self.scales[self.base + r]
            lo, hi = box[r] if box else (None, None)
            cons[k].SetBounds(-inf if lo is None else lo / s, inf if hi is None else hi / s)
            rows[k] = (rows[k][0], lo, hi)
        return rows

    def bound(self, box, cut: Fraction, budget: Budget) -> tuple[Fraction | None, bool, list[float]]:
        """A lower bound on the master's T (its units) with each rank's total in `box`; whether it is
        certified (it is when it comes near `cut` or above; below, GLOP's value only ever decides to go
        on branching: `certified` proves a leaf's); and the LP's rank totals. None when the LP is proved
        infeasible (nothing fits), 0 (certified) when GLOP proves nothing."""
        rows = self._fix(self.cons, box)
        status = solve_lp(self.lp)
        if status == pywraplp.Solver.OPTIMAL:
            x, col = self.lp.variables(), self.col
            totals = [sum(x[v].solution_value() * col[v] for v in vs) for vs in self.mine]
            value = Fraction(self.lp.Objective().Value())
            if value < cut - abs(cut) * Fraction(1, 10 ** 9) - Fraction(1, 10 ** 6):
                return value, False, totals
            return certify(rows, self.objective, self.domains, duals(self.cons, self.scales)), True, totals
        if status != pywraplp.Solver.INFEASIBLE:
            return Fraction(0), True, []
        if self.elastic is None:
            budget.spend(WORK_PER_LP_NONZERO * self.size)
            self.elastic = glop_model(self.rows, self.objective, self.domains, elastic=True)
        lp, cons, scales = self.elastic
        self._fix(cons, box)
        budget.spend(WORK_PER_LP_RESOLVE * self.size)
        if solve_lp(lp) == pywraplp.Solver.OPTIMAL and certify(rows, {}, self.domains, duals(cons, scales)) > 0:
            return None, True, []
        return Fraction(0), True, []

    def certified(self, box) -> Fraction:
        """The certified bound of the LP just solved (OPTIMAL) with `box`."""
        return certify(self._fix(self.cons, box), self.objective, self.domains, duals(self.cons, self.scales))

    def interval(self, r: int, least: int, most: int) -> tuple[int, int]:
        """The least and most blocks rank r may hold in the LP (certified), within [least, most]."""
        x, col = self.lp.variables(), self.col
        self._fix(self.cons, ())
        goal = self.lp.Objective()
        for sign in (1, -1):
            goal.Clear()
            for v in self.mine[r]:
                goal.SetCoefficient(x[v], sign * col[v])
            goal.SetMinimization()
            if self.lp.Solve() == pywraplp.Solver.OPTIMAL:
                b = certify(self.rows, {v: sign for v in self.mine[r]}, self.domains, duals(self.cons, self.scales))
                least, most = (max(least, math.ceil(b)), most) if sign > 0 else (least, min(most, math.floor(-b)))
        goal.Clear()
        for v, a in self.objective.items():
            goal.SetCoefficient(x[v], a * col[v])
        goal.SetMinimization()
        return least, most


def _tighten(box: list[tuple[int, int]], total: int) -> list[tuple[int, int]] | None:
    """`box` with each rank's range cut to what the others' ranges leave of `total`; None if empty."""
    lo, hi = sum(a for a, _ in box), sum(b for _, b in box)
    out = [(max(a, total - (hi - b)), min(b, total - (lo - a))) for a, b in box]
    return None if any(a > b for a, b in out) else out


def _split(box: list[tuple[int, int]], totals: list[float]) -> tuple[list, list]:
    """Two boxes that cover `box`: the rank whose LP total is furthest from a whole number (else the
    first whose range is open) split below and above that total."""
    frac = [abs(x - round(x)) if a < b else -1.0 for x, (a, b) in zip(totals, box)] if totals else []
    r = max(range(len(box)), key=lambda i: (frac[i], -i)) if frac and max(frac) > 1e-6 else \
        next(i for i, (a, b) in enumerate(box) if a < b)
    a, b = box[r]
    k = min(max(math.floor(totals[r] + 1e-9) if totals else (a + b) // 2, a), b - 1)
    return box[:r] + [(a, k)] + box[r + 1:], box[:r] + [(k + 1, b)] + box[r + 1:]


def branches(p: Problem, cut: int, budget: Budget, caps: list[int] | None = None) -> list[tuple[int, tuple[int, ...]]] | None:
    """Every composition of `p`'s blocks over its ranks (blocks per rank) whose certified LP bound is
    below `cut` (problem units), as (bound, totals), least first; None when `budget` ran out first.
    Branch and bound over boxes of per-rank totals, each split in two at the LP's most fractional rank
    total: a range of totals pruned by one LP where fixing the ranks' totals one after another took an
    LP for each value (GPT-3 175B tp4-pp8 below 46.13 s/step, v2/v3/v4: 1,895/1,765/1,583 LPs in
    2.0/3.5/4.3 s -> 0.17/0.20/0.24 s, the same one composition left; `benchmarks/totals_search.py`).
    Identical blocks only (`relax.lp_floor`). `caps`: the most blocks each rank may hold below `cut`
    (`floor.rank_caps`); when they leave one composition, its LP is the only one solved (no rank's
    interval is sought)."""
    total = sum(p.is_block)
    start = _start(p, caps)
    if start is None:
        return []
    tree = _Tree(p)
    budget.spend(WORK_PER_LP_NONZERO * tree.size)  # the model built, read back and solved once
    per_node = WORK_PER_LP_RESOLVE * tree.size
    if any(a < c for a, c in start):
        budget.spend(2 * p.pp * per_node)
        start = _tighten([tree.interval(r, a, c) for r, (a, c) in enumerate(start)], total)
    stack = [start]
    limit = Fraction(math.ceil(Fraction(cut, tree.unit)) - 1)  # pruned when ceil(bound) x unit >= cut
    leaves: list[tuple[int, tuple[int, ...]]] = []
    while stack:
        box = stack.pop()
        if box is None:
            continue
        if budget.spent():
            return None
        budget.spend(per_node)
        b, proved, totals = tree.bound(box, limit, budget)
        if b is None or (proved and b > limit):
            continue
        if all(a == c for a, c in box):
            if (b := max(0, math.ceil(b if proved else tree.certified(box))) * tree.unit) < cut:
                leaves.append((b, tuple(a for a, _ in box)))
            continue
        stack += [_tighten(half, total) for half in reversed(_split(box, totals))]
    return sorted(leaves)


def _start(p: Problem, caps: list[int] | None) -> list[tuple[int, int]] | None:
    """Each rank's range of block totals before any LP: a block a chunk at least, at most its cap (all
    the blocks without one), cut to what the others leave (`_tighten`); None when none is left."""
    total = sum(p.is_block)
    return _tighten([(p.vpp, min(total, caps[r]) if caps else total) for r in range(p.pp)], total)


def solve(p: Problem, time_limit: float = 10.0, cutoff: int | None = None,
          tick: Callable[[], None] | None = None, budget: Budget | None = None,
          warm: Warm | None = None, caps: Callable[[int], list[int] | None] | None = None) -> Solution | None:
    """`master.solve`, but a pipeline of identical blocks, interleaved or left open by an earlier solve
    (its `warm` holds paths), with a step to beat is first split by its ranks' block totals
    (`branches`, given at most BRANCH_SHARE of the budget). Up to MAX_LEAVES compositions left are
    solved on their own, least bound first, each with an equal share of what is left; with more, or
    when branching ran out of budget, the plain master goes on from the least composition's bound.
    Same answers and statuses as `master.solve`. `caps(target)`: the most blocks each rank may hold in
    an assignment below `target` (problem units; `floor.rank_caps`), where the ranks' ranges start."""
    warm = warm or Warm()
    budget = budget or Budget.seconds(time_limit)
    target = master.target(cutoff, warm.best)
    if not (warm.paths or p.vpp > 1) or target is None or p.pp == 1 or not p.uniform() or p.fixed_bounds or p.totals:
        return master.solve(p, time_limit, cutoff, tick, budget, warm)
    capped = caps(target) if caps else None
    start = _start(p, capped)
    point = start is None or all(a == c for a, c in start)
    if warm.leaves is None and _setup(p, point) > BRANCH_SHARE * budget.left():
        return master.solve(p, time_limit, cutoff, tick, budget, warm)  # a later, larger solve may branch
    if warm.leaves is None or (warm.leaves and target > warm.leaf_cut):
        share = budget.child(BRANCH_SHARE * budget.left())
        leaves = branches(p, target, share, capped)
        budget.spend(share.used)
        warm.leaf_cut = target
        floored: set = set()
        if leaves is not None and len(leaves) > MAX_LEAVES:
            leaves = _floored(p, leaves, target, warm, floored, budget)
        if leaves is None or len(leaves) > MAX_LEAVES:
            warm.leaves = {}  # the plain master goes on, from the least leaf's bound when there is one
            warm.bound = max(warm.bound, leaves[0][0] if leaves else 0)
            return master.solve(p, time_limit, cutoff, tick, budget, warm)
        warm.leaves = {t: Warm(paths=warm.paths, bound=b, cut=t in floored) for b, t in leaves}
    elif not warm.leaves:  # branching was tried: too costly, or too many compositions
        return master.solve(p, time_limit, cutoff, tick, budget, warm)
    return _leaves(p, cutoff, tick, budget, warm)


def _setup(p: Problem, point: bool = False) -> float:
    """About what `branches` spends before its first box (the LP built, and two LPs a rank for the
    ranks' intervals), at 4 C^2 nonzeros (2026-12-03: 3.1-7.3 C^2 from Llama 3 70B tp4-pp4 v3 to GPT 1T
    tp8-pp32 v4). GPT 1T's pp 32 trees cost 3.6-6.4 units against a 1.25-unit share: every one ran out
    before its first box, and the master went on with a fifth less. With the caps leaving one
    composition (`point`), the LP alone: GPT 1T's caps leave 4 blocks a rank below 64.91 s/step."""
    size = 4 * p.chunks ** 2
    return WORK_PER_LP_NONZERO * size + (0 if point else 2 * p.pp * WORK_PER_LP_RESOLVE * size)


def _floored(p: Problem, leaves: list, target: int, warm: Warm, floored: set, budget: Budget) -> list:
    """More compositions than MAX_LEAVES: their bounds raised to their path floors (`relax.path_floor`),
    least first, with at most PATH_SHARE of the budget; those that reach `target` dropped. Llama 3 70B
    tp4-pp4 v3 below 81.97 s/step: four compositions, LP floors 81.03-81.12, path floors 81.54-81.82."""
    if not warm.paths:  # the master's own start (`master.solve`), which the cuts join
        warm.paths = master.seed_pool(p, p.orders())
    share, out = budget.child(PATH_SHARE * budget.left()), []
    for b, totals in leaves:
        if not share.spent():
            floor, done = path_floor(replace(p, totals=totals), warm.paths, share)
            b = max(b, floor)
            if done:
                floored.add(totals)
        if b < target:
            out.append((b, totals))
    budget.spend(share.used)
    return sorted(out)


def _leaves(p: Problem, cutoff: int | None, tick, budget: Budget, warm: Warm) -> Solution | None:
    """Solve each composition in `warm.leaves` (least bound first) below the cutoff and the incumbent;
    the ones the budget leaves open stay in `warm.leaves`, and the least of their bounds is the gap's."""
    best, open_bounds, rounds = warm.best, [], 0
    order = sorted(warm.leaves.items(), key=lambda kv: (kv[1].bound, kv[0]))
    for k, (totals, leaf) in enumerate(order):
        cut = master.target(cutoff, best)
        if leaf.bound >= cut:
            del warm.leaves[totals]
            continue
        if budget.spent():
            open_bounds.append(leaf.bound)
            continue
        share = budget.child(budget.left() / (len(order) - k))
        if leaf.best is None and best is not None and _composition(p, best) == totals:
            leaf.best = best  # local search starts from it (`master._polish`)
        fixed = replace(p, totals=totals)
        if not leaf.cut:  # until it is done; each call goes on from the cuts in the leaf's paths
            floor = share.child(PATH_SHARE * share.left())
            b, leaf.cut = path_floor(fixed, leaf.paths, floor)
            leaf.bound = max(leaf.bound, b)
            share.spend(floor.used)
        sol = master.solve(fixed, cutoff=cut, tick=tick, budget=share, warm=leaf)
        budget.spend(share.used)
        rounds += sol.stats.get("rounds", 0) if sol is not None else 0
        if sol is not None and sol.bounds and sol.objective < cut:
            best = Solution(sol.bounds, sol.full, sol.selective, sol.objective)
        if sol is None or sol.status in ("OPTIMAL", "CUTOFF"):
            del warm.leaves[totals]
        else:
            open_bounds.append(leaf.bound)
    ceiling = master.target(cutoff, best)
    bound = min([b for b in open_bounds if b < ceiling] or [ceiling])
    warm.best, warm.bound = best, max(warm.bound, bound)
    stats = {"rounds": rounds, "paths": len(warm.paths), "unit": warm.unit, "compositions": len(order)}
    return master.answer(best, bound, "TIME_LIMIT" if bound < ceiling else "OPTIMAL", cutoff, stats)


def _composition(p: Problem, sol: Solution) -> tuple[int, ...]:
    """Blocks per pipeline rank of an assignment of `p`."""
    blocks = p.blocks_of(sol.bounds)
    return tuple(sum(blocks[r::p.pp]) for r in range(p.pp))
