"""The search's shared state (`Run`): the candidates and their bounds, the plan table, what each
candidate is proved not to go below, and one candidate's solve (`Run.attempt`) with its floors; the
passes over the candidates (`passes.py`) drive it."""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Callable

from planner.cost.model import CostModel
from planner.search.budget import (WORK_PER_ACTION, WORK_PER_LP_NONZERO, WORK_PER_MIX, WORK_PER_MIX_RANK,
                                   WORK_PER_PROBLEM_LAYER, WORK_PER_REACHABLE, Budget)
from planner.search.ceiling import estimate_work, floor_work, seed_work
from planner.search.dominance import dominates
from planner.search.floor import floor, reachable
from planner.search.dive import dive
from planner.search.master import Warm, seed_pool
from planner.search.partition import Problem, Solution
from planner.search.relax import Kelley
from planner.search.pricing import TIME_UNIT, Candidate, evaluate_fixed, assigned, lp_bound, problem, seeded
from planner.search.space import Constraints
from planner.search.table import keep
from planner.types.strategy import Strategy

__all__ = ["Run", "share", "solve_cost", "PER_SOLVE"]

PER_SOLVE = 5.0
"""Work (about seconds, see budget.py) one candidate may take while more than 4x that is left (a quarter
of what is left after): one hard candidate cannot use up the whole limit; one stopped early marks the
search TIME_LIMIT unless deepening (`deepen`) finishes it. The limit is counted in work, not read off
the clock, so the plan does not depend on the machine's load."""


@dataclass
class Run:
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
    """Per strategy: its LP floor, once computed (and charged), or the path floor a dive raised it to."""
    lp_solved: set = field(default_factory=set)
    """The strategies whose LP floor was computed and charged (`lp`)."""
    cleared: dict = field(default_factory=dict)
    """Per candidate: a step nothing of it is below, proved (a later solve cut short must not undo it):
    the cutoff it could not beat, its optimum, or inf when nothing of it fits."""
    dom: dict = field(default_factory=dict)
    """Per pipeline candidate looked at: whether a variant dominates it (`dominated`)."""
    problems: dict = field(default_factory=dict)
    """Per candidate: its partition problem, once built for a dominance test (and charged)."""
    variants: dict = field(init=False)
    """Pipeline candidates grouped by everything but their sharding level (`_variant`)."""
    kinds: list = field(init=False)
    """Per kind of `solve_cost` (the candidates are sorted by kind, then bound): its first index and its
    bounds in order (`ahead`)."""
    shown: tuple = ("search", 0, 0)
    """What the progress line says: the pass, candidates it has visited, and at most how many it will."""

    def __post_init__(self) -> None:
        self.kinds = []
        for k in sorted({solve_cost(s) for _, _, s in self.bounded}):
            idx = [j for j, (_, _, s) in enumerate(self.bounded) if solve_cost(s) == k]
            self.kinds.append((idx[0], [self.bounded[j][0] for j in idx]))
        self.variants = {}
        for j, (_, label, s) in enumerate(self.bounded):
            if s.pp > 1:
                self.variants.setdefault(_variant(label), []).append(j)

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
                self.clear(i, cut)
                self.open.pop(i, None)
                self.warm.pop(i, None)
                return
            self.prime(i, cut, passes)
        if self.progress:
            self.progress(*self.shown)
        cand = evaluate_fixed(self.cm, s, self.batch, self.c.recompute, cutoff=cut,
                              tick=self.progress and (lambda: self.progress(*self.shown)), budget=budget, warm=self.warm.setdefault(i, Warm()))
        for b in passes:
            b.spend(budget.used + (floor_work(self.cm, s) if cand.solver_status in ("UNRESOLVED", "TIME_LIMIT") else 0.0))
        self.work.spend(estimate_work(self.cm, s))
        self.solved.add(i)
        best = self.best()
        if cand.solver_status == "UNRESOLVED":
            self.open[i] = max(self.open.get(i, 0.0), self.cleared.get(i, 0.0), self.raise_bound(s, cand.lower_bound, best, passes))
            return
        self.open.pop(i, None)
        if cand.solver_status != "TIME_LIMIT":
            del self.warm[i]  # resolved: nothing left to go on from
        if cand.solver_status == "CUTOFF":
            self.clear(i, cut)
            return
        if cand.estimate is None or not cand.estimate.feasible:
            self.no_fit.add(i)
            self.clear(i, math.inf)
            return
        if cand.solver_status == "OPTIMAL":
            self.clear(i, cand.estimate.step_time_s)
        else:
            proved = cand.estimate.step_time_s * (1 - cand.gap)
            self.open[i] = max(self.open.get(i, 0.0), self.cleared.get(i, 0.0), self.raise_bound(s, proved, best, passes))
        keep(self.top, cand, self.c.top_k + 1)

    def clear(self, i: int, step: float) -> None:
        """Record that nothing of candidate i is below `step` (proved; a weaker proof never lowers it)."""
        self.cleared[i] = max(self.cleared.get(i, 0.0), step)

    def least(self, i: int) -> float:
        """The least step candidate i may still reach, as far as the search proved: its bound, its bound
        left open, what it was cleared at, its LP floor."""
        lb, _, s = self.bounded[i]
        return max(lb, self.open.get(i, 0.0), self.cleared.get(i, 0.0), self.lps.get(s, 0.0))

    def dominated(self, i: int) -> bool:
        """Whether a variant of pipeline candidate i in sharding level dominates it (`dominance.py`; of
        two equal problems the first in the list stands), so that skipping i loses nothing: i is never
        faster than that variant, which the search still visits or has bounded."""
        if i not in self.dom:
            s = self.bounded[i][2]
            mine = self.variants.get(_variant(self.bounded[i][1]), []) if s.pp > 1 else []
            self.dom[i] = any(dominates(self._problem(j), self._problem(i))
                              and (j < i or not dominates(self._problem(i), self._problem(j))) for j in mine if j != i)
        return self.dom[i]

    def _problem(self, i: int) -> Problem:
        if i not in self.problems:
            s = self.bounded[i][2]
            self.work.spend(WORK_PER_PROBLEM_LAYER * len(self.cm.kinds))
            self.problems[i] = problem(self.cm, s, self.c.recompute, s.layers_per_chunk)
        return self.problems[i]

    def floor_rules_out(self, s: Strategy, cut: float, passes: tuple[Budget, ...], lp: bool = True) -> bool:
        """True when no partition can reach `cut`: the discrete floor (`floor.reachable`), then (with
        `lp`) the LP floor; each test is charged to each budget in `passes` alike (`charge_reach`)."""
        self.charge_reach(s, passes)
        return not reachable(self.cm, s, cut * (1 + 1e-7)) or (lp and self.lp(s, passes) >= cut)

    def lp(self, s: Strategy, passes: tuple[Budget, ...]) -> float:
        """A pipeline's LP floor (`pricing.lp_bound`; 0 without one, or when it may cost more than a pass
        has left), charged to `passes` the first time only: it is computed once (memoised). Charging
        every ask, as the bounds of unresolved solves did, charged GPT 1T's 60 s search 12.6 units for
        1.8 s of LPs (2026-12-04), a fifth of its limit."""
        if s.pp == 1:
            return 0.0
        if s not in self.lp_solved:
            # 3 C^2: about its nonzeros (Llama 3 405B tp8-pp32 v2 and v3: 2.7 and 2.5 C^2, 2026-12-03)
            if WORK_PER_LP_NONZERO * 3 * s.chunks ** 2 > min(b.left() for b in passes):
                return self.lps.get(s, 0.0)
            self.lp_solved.add(s)
            value, size = lp_bound(self.cm, s)
            self.lps[s] = max(self.lps.get(s, 0.0), value)  # a dive's path floor may have raised it
            for b in passes:
                b.spend(WORK_PER_LP_NONZERO * size)
        return self.lps.get(s, 0.0)

    def raise_bound(self, s: Strategy, proved: float, best: float, passes: tuple[Budget, ...], lp: bool = True) -> float:
        """What a candidate the time limit left unproved may still reach: its solver's bound, raised by the
        discrete floor and (with `lp`) the LP floor when that bound is below the best plan."""
        if proved >= best:
            return proved
        return max(floor(self.cm, s, proved, best), self.lp(s, passes) if lp else 0.0)

    def prime(self, i: int, cut: float, passes: tuple[Budget, ...]) -> None:
        """Before candidate i's first solve (charged as a floor, a seed and an estimate): its discrete floor is its
        master's starting bound (problem units less 1e-7 and one unit: `pricing.problem` rounds times
        up, ends down), the floor's seed plan its incumbent (`pricing.seeded`; 175B tp4-pp8 v2: 46.35
        s/step, where the search's answer had been 47.14)."""
        warm = self.warm.setdefault(i, Warm())
        if not (warm.bound or warm.paths):
            lb, _, s = self.bounded[i]
            for b in passes:
                b.spend(floor_work(self.cm, s) + (0.0 if warm.seeded else seed_work(self.cm, s) + estimate_work(self.cm, s)))
            least = max(floor(self.cm, s, lb, cut), self.lp(s, passes))
            warm.bound = max(0, int(least * (1 - 1e-7) / TIME_UNIT) - 1)
            if not warm.seeded:
                warm.best, warm.seeded = seeded(self.cm, s, lb, cut), True

    def seed_table(self, i: int, cutoff: float, budget: Budget) -> None:
        """Pipeline candidate i's seed plan (`pricing.seeded`, charged to `budget`; its incumbent when it is
        solved), when it beats `cutoff`, kept in the table as its family's (HEURISTIC) best so far."""
        s = self.bounded[i][2]
        if s.pp == 1 or self.c.recompute is not None:
            return
        warm = self.warm.setdefault(i, Warm())
        if warm.best is None and not warm.seeded:
            lb = self.bounded[i][0]
            budget.spend(seed_work(self.cm, s) + estimate_work(self.cm, s))
            warm.best, warm.seeded = seeded(self.cm, s, lb, cutoff * (1 + 1e-9) + TIME_UNIT), True
        if warm.best is not None and warm.best.objective * TIME_UNIT < cutoff:
            self._keep(i, warm.best, budget)

    def _keep(self, i: int, sol: Solution, budget: Budget) -> None:
        """Candidate i's assignment `sol`, priced (charged to `budget`), kept in the table (HEURISTIC)."""
        plan = assigned(self._problem(i), self.bounded[i][2], sol)
        budget.spend(estimate_work(self.cm, plan))
        keep(self.top, Candidate(plan, self.cm.estimate(plan, self.batch), self.bounded[i][0], "HEURISTIC"),
             self.c.top_k + 1)

    def dive(self, i: int, budget: Budget) -> None:
        """LP dives on pipeline candidate i (`dive.py`; identical blocks, bounds not fixed) within `budget`,
        after `prime`: the plan they find joins the table when it is the best of its family, and stays
        the candidate's incumbent for its solve, with the paths and the path floor they proved (which
        raises the candidate's LP floor)."""
        p, s = self._problem(i), self.bounded[i][2]
        if not p.uniform() or p.fixed_bounds:
            return
        cut = self.best() * (1 + 1e-9) + TIME_UNIT
        self.prime(i, cut, (budget,))
        warm = self.warm[i]
        warm.paths = warm.paths or seed_pool(p, p.orders())
        sol, least = dive(p, warm.paths, budget, int(cut / TIME_UNIT))
        warm.bound = max(warm.bound, least)
        self.lps[s] = max(self.lps.get(s, 0.0), least * TIME_UNIT)
        if sol is None or (warm.best is not None and warm.best.objective <= sol.objective):
            return
        warm.best, warm.polished = sol, sol.objective
        self._keep(i, sol, budget)

    def shared_floor(self, j: int, paths: dict, budget: Budget) -> None:
        """Candidate j's LP floor raised to the LP over `paths`, another candidate's with the same action
        orders (a variant in sharding level or data-parallel split, dived): each path is a row of j's
        LP too, with j's own end terms. One LP solve, no cut sought (`relax.Kelley`)."""
        p, s = self._problem(j), self.bounded[j][2]
        if p.uniform() and not p.fixed_bounds:
            kelley = Kelley(p, dict(paths), budget)
            kelley.run(budget, 0)
            self.lps[s] = max(self.lps.get(s, 0.0), kelley.bound() * TIME_UNIT)

    def charge_reach(self, s: Strategy, passes: tuple[Budget, ...]) -> None:
        """Charge each budget in `passes` what `floor.reachable` costs (budget.py): little, but the first
        time an interleaved schedule shape is seen, its in-flight counts and their mixed floor are built.
        One call for every budget: the shape is marked seen here, and a second call would charge less
        (the budgets after the first once went without: GPT 1T's 10 s search charged its sweep 0.39
        units to the proof, 2.32 to the limit, and the clock decided its plan)."""
        key = (s.schedule, s.pp, s.vpp, s.num_micro_batches)
        work = WORK_PER_REACHABLE
        if s.vpp > 1 and key not in self.shapes:
            self.shapes.add(key)
            mix = sum(len(v) ** 2 for v in self.cm.in_flight(s)) * s.vpp ** 2
            work += WORK_PER_ACTION * 2 * s.num_micro_batches * s.chunks + WORK_PER_MIX_RANK * s.pp + WORK_PER_MIX * mix
        for b in passes:
            b.spend(work)

    def ahead(self, i: int, cutoff: float, skip: list[int] | None = None) -> int:
        """How many candidates after `i` have a lower bound below `cutoff` (each kind of `solve_cost` is
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


def _variant(label: str) -> tuple[str, ...]:
    """A candidate's label without its sharding level: what its variants in ZeRO level share."""
    return tuple(t for t in label.split() if not t.startswith("zero"))


def share(budget: Budget, floor_share: float) -> Budget:
    """One solve's part of `budget`: `floor_share` while more than 4x that is left, else a quarter of
    what is left (one hard candidate cannot use up the whole limit); a sliver past the limit when it is
    spent (only while no plan exists: the search never stops before one)."""
    left = budget.left()
    if left <= 0:
        return Budget(0.05)
    return budget.child(max(0.05, min(left, max(floor_share, left / 4))))


def solve_cost(s: Strategy) -> int:
    """Candidates are solved cheapest kind first, each kind in order of its lower bounds: one chunk (no
    partition to solve: milliseconds), then one chunk per pipeline rank (seconds), then interleaved
    chunks (up to tens of seconds for 13B-sized models). The cheap kinds set a strong best plan early,
    which then prunes, and cuts off, the expensive solves; the order never changes the answer of a
    search that finishes, only how good the plan is when the time limit comes first."""
    return 0 if s.pp == 1 else 1 if s.vpp == 1 else 2
