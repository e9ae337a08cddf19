"""The search: enumerate mesh factorisations and discrete knobs, prune with lower bounds, and solve
each surviving candidate's stage boundaries and recompute with CP-SAT (`partition.py`).

Candidates are visited in order of a lower bound on their step time that holds for every partition
and recompute choice (see `lower_bound`). A candidate whose bound is not below the best step time
found cannot win, so it is skipped: the best plan is optimal under the cost model (up to each CP-SAT
solve's own gap, reported). Runner-ups are the best of each other layout family (mesh and schedule)
within RUNNER_UP_MARGIN of the best, found after the proof with what is left of the limit.
"""
from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from planner.cost.model import CostModel
from planner.search import explain
from planner.search.bounds import fits_at_all, lower_bound
from planner.search.ceiling import by_floor, ceiling, estimate_work
from planner.search.floor import floor, reachable
from planner.search.budget import (WORK_PER_ACTION, WORK_PER_BOUND, WORK_PER_MIX, WORK_PER_MIX_RANK,
                                   WORK_PER_LP_NONZERO, WORK_PER_NODE_BOUND, WORK_PER_REACHABLE, WORK_SHARE, Budget)
from planner.search.master import Warm
from planner.search.pricing import TIME_UNIT, Candidate, evaluate_fixed, lp_bound, seeded
from planner.search.space import Constraints, default_global_batch, skeletons
from planner.search.table import RUNNER_UP_MARGIN, keep, table_cutoff
from planner.types.plan import SolverStats
from planner.types.strategy import EXCLUDED, Strategy

__all__ = ["SearchResult", "search"]

WARM_START = 20
"""Candidates of each kind (`_solve_cost`, best lower bounds first) whose even split and floor seed
price the first ceiling."""
PER_SOLVE = 5.0
"""Work (about seconds, see budget.py) one candidate may take while more than 4x that is left (a quarter
of what is left after): one hard candidate cannot use up the whole limit; one stopped early marks the
search TIME_LIMIT unless deepening (`_deepen`) finishes it. The limit is counted in work, not read off
the clock, so the plan does not depend on the machine's load."""
PROOF_SHARE = 0.8
"""Of the time limit (after the bounds), what the proof and deepening may use; the runner-up families
get the rest and whatever the proof did not need."""
SETTLE_SHARE = 0.05
"""Of the time limit, what is kept for raising the bounds of the candidates it left unvisited (`_settle`)."""


@dataclass(frozen=True)
class SearchResult:
    """The best candidate (None when nothing fits, with the reason), the runner-ups and the stats."""

    best: Candidate | None
    runner_ups: list[Candidate]
    stats: SolverStats
    global_batch: int
    infeasible_reason: str = ""


def search(cm: CostModel, c: Constraints, progress: Callable[[str, int, int], None] | None = None) -> SearchResult:
    """The best strategy under `c`, the best of each other layout family (the runner-ups), and the
    solver statistics, in three passes over the candidates (cheapest kind first, `_solve_cost`, each
    kind in order of its lower bounds). The proof (`_prove`): each solve is told to beat the best so far
    and stops as soon as it cannot. Deepening (`_deepen`): the candidates it left open are solved again,
    each with an equal share of what the proof has left. The runner-ups (`_runner_ups`): with what is
    left, each other layout family's best within RUNNER_UP_MARGIN of the best. The runner-up table is
    filled after the proof, so it never takes the proof's time."""
    t0 = time.perf_counter()
    batch = c.global_batch or default_global_batch(cm.world)
    excluded: dict[str, int] = {}
    bounded, too_big = _bounded(cm, c, batch, excluded)
    deadline = t0 + c.time_limit  # the clock's hard bound (budget.py)
    work = Budget(WORK_SHARE * c.time_limit * (1 - SETTLE_SHARE), wall_deadline=deadline - SETTLE_SHARE * c.time_limit)
    work.spend((WORK_PER_BOUND + WORK_PER_NODE_BOUND * len(cm.cluster.nodes)) * (len(bounded) + too_big))
    top: list[Candidate] = ceiling(cm, _warm(bounded), batch, c.recompute, work)
    bounded.sort(key=lambda x: (_solve_cost(x[2]), x[0], x[1]))
    run = _Run(cm, c, batch, bounded, top, work, progress)
    proof = work.child(PROOF_SHARE * work.left())
    _prove(run, proof)
    _deepen(run, proof)
    _runner_ups(run)
    _settle(run, Budget(WORK_SHARE * c.time_limit * SETTLE_SHARE, wall_deadline=deadline))
    solved = len(run.solved)  # candidates solved at least once; the others were pruned or never reached
    counts = dict(candidates=len(bounded) + too_big, pruned=len(bounded) - solved + too_big, solved=solved,
                  did_not_fit=len(run.no_fit) + too_big)
    return _result(cm, c, batch, top, list(run.open.values()), counts, excluded, time.perf_counter() - t0)


@dataclass
class _Run:
    """What the passes share: the candidates, the table (best first, `table.keep`), the counters, and, per
    candidate index left open, the least step time it may still reach."""

    cm: CostModel
    c: Constraints
    batch: int
    bounded: list[tuple]
    top: list[Candidate]
    work: Budget
    progress: Callable[[str, int, int], None] | None
    open: dict = field(default_factory=dict)
    warm: dict = field(default_factory=dict)
    solved: set = field(default_factory=set)
    no_fit: set = field(default_factory=set)
    shapes: set = field(default_factory=set)
    lps: dict = field(default_factory=dict)
    """Per strategy: its LP floor, once computed (and charged)."""
    cleared: dict = field(default_factory=dict)
    """Per candidate: a step nothing of it is below, proved (a later solve cut short must not undo it)."""
    kinds: list = field(init=False)
    """Per kind of `_solve_cost` (the candidates are sorted by kind, then bound): its first index and its
    bounds in order (`ahead`)."""
    shown: tuple = ("search", 0, 0)
    """What the progress line says: the pass, candidates it has visited, and at most how many it will."""

    def __post_init__(self) -> None:
        self.kinds = []
        for k in sorted({_solve_cost(s) for _, _, s in self.bounded}):
            idx = [j for j, (_, _, s) in enumerate(self.bounded) if _solve_cost(s) == k]
            self.kinds.append((idx[0], [self.bounded[j][0] for j in idx]))

    def best(self) -> float:
        return self.top[0].estimate.step_time_s if self.top else math.inf

    def attempt(self, i: int, cutoff: float, budget: Budget, of: Budget | None = None) -> None:
        """Solve candidate `i` told to beat `cutoff` within `budget` (a share of the pass's budget `of`,
        when the pass has one); what it used is charged to that pass and to the limit. Record what it
        proved: a plan (kept in the table), or nothing below the cutoff, or a bound it may still reach
        (open)."""
        s = self.bounded[i][2]
        cut = None if math.isinf(cutoff) else cutoff * (1 + 1e-9) + TIME_UNIT
        passes = (self.work,) + ((of,) if of is not None else ())
        if cut is not None and self.c.recompute is None:
            if self.floor_rules_out(s, cut, passes):
                self.cleared[i] = max(self.cleared.get(i, 0.0), cut)
                self.open.pop(i, None)
                self.warm.pop(i, None)
                return
            self.prime(i, cut, passes)
        if self.progress:
            self.progress(*self.shown)
        cand = evaluate_fixed(self.cm, s, self.batch, self.c.recompute, cutoff=cut,
                              tick=self.progress and (lambda: self.progress(*self.shown)), budget=budget, warm=self.warm.setdefault(i, Warm()))
        for b in passes:
            b.spend(budget.used + (estimate_work(self.cm) if cand.solver_status in ("UNRESOLVED", "TIME_LIMIT") else 0.0))
        self.work.spend(estimate_work(self.cm))
        self.solved.add(i)
        best = self.best()
        if cand.solver_status == "UNRESOLVED":
            self.open[i] = max(self.open.get(i, 0.0), self.cleared.get(i, 0.0), self.raise_bound(s, cand.lower_bound, best, passes))
            return
        self.open.pop(i, None)
        if cand.solver_status != "TIME_LIMIT":
            del self.warm[i]  # resolved: nothing left to go on from
        if cand.solver_status == "CUTOFF":
            self.cleared[i] = max(self.cleared.get(i, 0.0), cut)
            return
        if cand.estimate is None or not cand.estimate.feasible:
            self.no_fit.add(i)
            return
        if cand.solver_status != "OPTIMAL":
            proved = cand.estimate.step_time_s * (1 - cand.gap)
            self.open[i] = max(self.open.get(i, 0.0), self.cleared.get(i, 0.0), self.raise_bound(s, proved, best, passes))
        keep(self.top, cand, self.c.top_k + 1)

    def floor_rules_out(self, s: Strategy, cut: float, passes: tuple[Budget, ...], lp: bool = True) -> bool:
        """True when no partition can reach `cut`: the discrete floor (`floor.reachable`), then (with
        `lp`) the LP floor; each test is charged to each budget in `passes`."""
        for b in passes:
            b.spend(self.reach_work(s))
        return not reachable(self.cm, s, cut * (1 + 1e-7)) or (lp and self.lp(s, passes) >= cut)

    def lp(self, s: Strategy, passes: tuple[Budget, ...], always: bool = False) -> float:
        """A pipeline's LP floor (`pricing.lp_bound`; 0 without one, or when it may cost more than a pass
        has left), charged to `passes` the first time (`always`: every time, so that what a pass does with
        its budget does not depend on the others)."""
        first = s not in self.lps
        if s.pp == 1 or (first and WORK_PER_LP_NONZERO * 6 * s.chunks ** 2 > min(b.left() for b in passes)):
            return 0.0  # 6 C^2: about its nonzeros at most (2 paths a chunk, each reading 3 numbers a chunk)
        self.lps[s], size = lp_bound(self.cm, s)
        for b in passes if first or always else ():
            b.spend(WORK_PER_LP_NONZERO * size)
        return self.lps[s]

    def raise_bound(self, s: Strategy, proved: float, best: float, passes: tuple[Budget, ...], lp: bool = True) -> float:
        """What a candidate the time limit left unproved may still reach: its solver's bound, raised by the
        discrete floor and (with `lp`) the LP floor when that bound is below the best plan."""
        if proved >= best:
            return proved
        return max(floor(self.cm, s, proved, best), self.lp(s, passes, always=True) if lp else 0.0)

    def prime(self, i: int, cut: float, passes: tuple[Budget, ...]) -> None:
        """Before candidate i's first solve (charged as three estimates): its discrete floor is its
        master's starting bound (problem units less 1e-7 and one unit: `pricing.problem` rounds times
        up, ends down), the floor's seed plan its incumbent (`pricing.seeded`; 175B tp4-pp8 v2: 46.35
        s/step, where the search's answer had been 47.14)."""
        warm = self.warm.setdefault(i, Warm())
        if not (warm.bound or warm.paths):
            for b in passes:
                b.spend(3 * estimate_work(self.cm))
            lb, _, s = self.bounded[i]
            least = max(floor(self.cm, s, lb, cut), self.lp(s, passes))
            warm.bound = max(0, int(least * (1 - 1e-7) / TIME_UNIT) - 1)
            warm.best = seeded(self.cm, s, lb, cut)

    def reach_work(self, s: Strategy) -> float:
        """What `floor.reachable` costs (budget.py): little, but the first time an interleaved schedule
        shape is seen, its in-flight counts and their mixed floor are built."""
        key = (s.schedule, s.pp, s.vpp, s.num_micro_batches)
        if s.vpp == 1 or key in self.shapes:
            return WORK_PER_REACHABLE
        self.shapes.add(key)
        mix = sum(len(v) ** 2 for v in self.cm.in_flight(s)) * s.vpp ** 2
        return (WORK_PER_REACHABLE + WORK_PER_ACTION * 2 * s.num_micro_batches * s.chunks + WORK_PER_MIX_RANK * s.pp
                + WORK_PER_MIX * mix)

    def ahead(self, i: int, cutoff: float, skip: list[int] | None = None) -> int:
        """How many candidates after `i` have a lower bound below `cutoff` (each kind of `_solve_cost` is
        sorted by its bounds: a bisection per kind), less those in `skip` (sorted indices the pass
        will not visit)."""
        n = 0
        for start, lbs in self.kinds:
            lo = min(max(i + 1 - start, 0), len(lbs))
            hi = max(lo, bisect.bisect_left(lbs, cutoff, lo))
            n += hi - lo
            if skip:
                n -= bisect.bisect_left(skip, start + hi) - bisect.bisect_left(skip, start + lo)
        return n


def _share(budget: Budget, floor_share: float) -> Budget:
    """One solve's part of `budget`: `floor_share` while more than 4x that is left, else a quarter of
    what is left (one hard candidate cannot use up the whole limit); a sliver past the limit when it is
    spent (only while no plan exists: the search never stops before one)."""
    left = budget.left()
    if left <= 0:
        return Budget(0.05)
    return budget.child(max(0.05, min(left, max(floor_share, left / 4))))


def _sweep(run: _Run, proof: Budget) -> set[int]:
    """Before any solve, the discrete floor (`floor.reachable`, milliseconds) at the best plan so far
    for every candidate whose bound is below it: those it rules out can never beat the best (it only
    falls), so the proof skips them, and the limit no longer leaves cheap-to-prune candidates unvisited
    behind a few hard ones (GPT 1T on 8x384: 188 of its first 200 open interleaved candidates). The LP
    floor waits for the proof: a tenth of a second each, it took all of Llama 3 405B's proof here."""
    out: set[int] = set()
    if run.c.recompute is not None or not run.top:
        return out
    best = run.best()
    cut = best * (1 + 1e-9) + TIME_UNIT
    for i, (lb, _, s) in enumerate(run.bounded):
        if proof.spent():
            break
        if lb < best and run.floor_rules_out(s, cut, (run.work, proof), lp=False):
            out.add(i)
    return out


def _reseed(run: _Run, proof: Budget, ruled_out: set[int]) -> None:
    """After the sweep, with at most a quarter of the proof: the seeds of the candidates it let through
    with the least floors (`ceiling.by_floor`) may lower the best plan; then every candidate whose floor
    is not below the best is ruled out too (added to `ruled_out`)."""
    if run.c.recompute is not None or not run.top:
        return
    cut = run.best() * (1 + 1e-9) + TIME_UNIT
    survivors = [i for i, (lb, _, _) in enumerate(run.bounded) if lb < run.best() and i not in ruled_out]
    share = proof.child(proof.left() / 4)
    found, floors = by_floor(run.cm, run.bounded, survivors, cut, run.batch, share)
    for b in (run.work, proof):
        b.spend(share.used)
    if found is not None and found.estimate.step_time_s < run.best():
        keep(run.top, found, run.c.top_k + 1)
    ruled_out.update(i for i, f in floors.items() if f * (1 - 1e-7) >= run.best() * (1 + 1e-9) + TIME_UNIT)


def _lp_sweep(run: _Run, proof: Budget, ruled_out: set[int]) -> None:
    """After the reseed, with at most a third of the proof: the LP floor (`_Run.lp`, up to a second
    each) of every pipeline candidate still in, least bound first; those at or above the best are ruled
    out (added to `ruled_out`) before any solve. Llama 3 405B on 8x2048 at a 60 s limit: the candidates
    left open at the end fell from a 27.8% gap below the plan to 16.9%."""
    if run.c.recompute is not None or not run.top:
        return
    cut = run.best() * (1 + 1e-9) + TIME_UNIT
    share = proof.child(proof.left() / 3)
    for i, (lb, _, s) in enumerate(run.bounded):
        if share.spent():
            return
        if lb < run.best() and i not in ruled_out and run.lp(s, (run.work, proof, share)) >= cut:
            ruled_out.add(i)


def _prove(run: _Run, proof: Budget) -> None:
    """The first pass: every candidate whose lower bound is below the best so far and that the floor
    (`_sweep`) lets through, told to beat it. When the proof's budget runs out (and a plan exists), the
    candidates not visited stay open at their lower bounds."""
    done = 0
    ruled_out = _sweep(run, proof)
    _reseed(run, proof, ruled_out)
    _lp_sweep(run, proof, ruled_out)
    skip = sorted(ruled_out)
    for i, (lb, _, s) in enumerate(run.bounded):
        if lb >= run.best() or i in ruled_out:
            continue  # cannot beat the best
        if run.top and proof.spent():  # never stop before a plan exists
            run.open.update({j: max(b, run.lps.get(t, 0.0)) for j, (b, _, t) in enumerate(run.bounded)
                             if j >= i and j not in ruled_out})
            return
        done += 1
        run.shown = ("search", done, done + run.ahead(i, run.best(), skip))
        run.attempt(i, run.best(), _share(proof, PER_SOLVE), of=proof)


def _deepen(run: _Run, proof: Budget) -> None:
    """The candidates the proof left open below the best, solved on from where they stopped (`master.Warm`)
    in order of their bounds, each with an equal share of what the proof has left, while it lasts."""
    while not proof.spent():
        order = sorted((i for i in run.open if run.open[i] < run.best()), key=lambda i: (run.open[i], i))
        if not order:
            return
        for j, i in enumerate(order):
            if proof.spent():
                return
            if i not in run.open or run.open[i] >= run.best():
                continue
            share = proof.child(proof.left() / (len(order) - j))
            run.shown = ("deepen", j + 1, len(order))
            run.attempt(i, run.best(), share, of=proof)


def _runner_ups(run: _Run) -> None:
    """With what is left of the limit, the best plan of each other layout family: every candidate whose
    bound is below what it must beat (`table.table_cutoff`), told to beat that. None when none are
    asked for (`top_k` 0)."""
    if run.c.top_k == 0:
        return
    done = 0
    for i, (lb, _, s) in enumerate(run.bounded):
        if run.work.spent():
            return
        cutoff = table_cutoff(run.top, s, run.c.top_k + 1)
        if lb >= cutoff:
            continue
        done += 1
        run.shown = ("runner-ups", done, done + run.ahead(i, RUNNER_UP_MARGIN * run.best()))
        run.attempt(i, cutoff, _share(run.work, PER_SOLVE))


def _settle(run: _Run, budget: Budget) -> None:
    """Candidates the limit left unvisited are open at their cheap lower bounds. Raise them, least
    first, to the discrete floor, then to the LP floor (`_Run.raise_bound`, as a solved candidate's is
    raised; milliseconds, then up to a second for GPT 1T's pp 32), each pass until the least open bound
    is one it proved, or `budget` is spent (the rest keep their bounds, still true): the gap reported
    is then what the floors allow, and a search whose every unvisited candidate the floors put at or
    above the plan is proved."""
    best = run.best()
    for lp in (False, True):
        settled = math.inf
        for b, i in sorted((b, i) for i, b in run.open.items() if i not in run.solved and b < best):
            if b >= settled or budget.spent():
                break
            budget.spend(estimate_work(run.cm))
            run.open[i] = run.raise_bound(run.bounded[i][2], b, best, (budget,), lp)
            settled = min(settled, run.open[i])


def _bounded(cm: CostModel, c: Constraints, batch: int, excluded: dict[str, int]) -> tuple[list[tuple], int]:
    """The candidates that might fit, with their lower bounds, best first; and how many cannot fit."""
    bounded, too_big = [], 0
    for s in skeletons(cm, c, batch, excluded):
        if not fits_at_all(cm, s):
            too_big += 1
            continue
        bounded.append((lower_bound(cm, s), s.label(), s))
    bounded.sort(key=lambda x: (x[0], x[1]))
    return bounded, too_big


def _result(cm: CostModel, c: Constraints, batch: int, top: list[Candidate], open_bounds: list[float],
            counts: dict, excluded: dict, wall: float) -> SearchResult:
    """The search is OPTIMAL unless a candidate left open by the time limit may still beat the best
    (a runner-up family's solve that stopped early above the best leaves the plan proved); the gap is
    how much the best open bound could undercut it."""
    gap, status = 0.0, "OPTIMAL"
    if top:
        best = top[0].estimate.step_time_s
        below = [b for b in open_bounds if b < best * (1 - 1e-9)]
        if below:
            status, gap = "TIME_LIMIT", (best - min(below)) / best
    stats = SolverStats(wall_s=wall, status=status if top else "INFEASIBLE", gap=gap, **counts,
                        excluded=dict(sorted(excluded.items())), not_searched=dict(EXCLUDED))
    if not top:
        return SearchResult(None, [], stats, batch, explain.why_nothing(cm, c, batch, counts["candidates"] > 0))
    best, rest = top[0], top[1:]
    shown = [replace(r, why_not=explain.why_not(best.estimate, r.estimate, r.solver_status, r.gap)) for r in rest]
    return SearchResult(best, shown, stats, batch)


def _warm(bounded: list[tuple]) -> list[tuple]:
    """The first WARM_START candidates of each kind, in order of their bounds: a good plan is often of
    a kind whose bounds are not the least (GPT 1T on 8x384: one chunk per rank, pp 32, whose seed runs
    69.69 s/step, was once the 30th candidate solved), and a strong first ceiling prunes the hard
    solves of the candidates before it. Further seeds come after the floor sweep (`_reseed`)."""
    seen: dict[int, int] = {}
    out = []
    for x in bounded:
        k = _solve_cost(x[2])
        if seen.get(k, 0) < WARM_START:
            seen[k] = seen.get(k, 0) + 1
            out.append(x)
    return out


def _solve_cost(s: Strategy) -> int:
    """Candidates are solved cheapest kind first, each kind in order of its lower bounds: one chunk (no
    partition to solve: milliseconds), then one chunk per pipeline rank (seconds), then interleaved
    chunks (up to tens of seconds for 13B-sized models). The cheap kinds set a strong best plan early,
    which then prunes, and cuts off, the expensive solves; the order never changes the answer of a
    search that finishes, only how good the plan is when the time limit comes first."""
    return 0 if s.pp == 1 else 1 if s.vpp == 1 else 2
