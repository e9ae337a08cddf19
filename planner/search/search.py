"""The search: enumerate mesh factorisations and discrete knobs, prune with lower bounds, and solve
each surviving candidate's stage boundaries and recompute with CP-SAT (`partition.py`).

Candidates are visited in order of a lower bound on their step time that holds for every partition
and recompute choice (see `lower_bound`). A candidate whose bound is not below the best step time
found cannot win, so it is skipped: the best plan is optimal under the cost model (up to each CP-SAT
solve's own gap, reported). Runner-ups are the best of each other layout family (mesh and schedule)
within `table.RUNNER_UP_MARGIN` of the best, found after the proof with a share of the work the proof took.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from planner.cost.model import CostModel
from planner.search import explain
from planner.search.bounds import fits_at_all, lower_bound
from planner.search.budget import WORK_PER_BOUND, WORK_PER_RING_RANK, WORK_SHARE, Budget
from planner.search.ceiling import ceiling
from planner.search.passes import deepen, family_best, prove, runner_ups, settle
from planner.search.pricing import Candidate
from planner.search.run import Run, solve_cost
from planner.search.space import Constraints, default_global_batch, skeletons
from planner.types.plan import SolverStats
from planner.types.strategy import EXCLUDED

__all__ = ["SearchResult", "search"]

WARM_START = 20
"""Candidates of each kind (`solve_cost`, best lower bounds first) whose even split and floor seed
price the first ceiling."""
PROOF_SHARE = 0.9
"""Of the time limit (after the bounds), what the proof and deepening may use; settling (`SETTLE_TAKES`)
and then the runner-up families (`RUNNER_UP_SHARE`) get at most the rest. The plan's proof is worth more
than the runner-up table: at 0.8, Llama 3 70B on 8x16 at 60 s ended TIME_LIMIT 0.002% (its proof needs
about 43 units of work, 0.8 gave it 40); at 0.9 it is OPTIMAL in 31 s with the same runner-ups
(2026-12-04). The cost, in the same runs: GPT-3 175B's table lost three families it had found cut short
(tp8-pp4-dp4 49.54, tp8-pp8-dp2 49.95, tp8-pp16-dp1 53.17 s/step, against its plan's 46.13) and two it
keeps at the same step times are no longer proved; GPT 1T's lost one (tp8-pp24-dp16, 73.29, against
64.91); the plans and the other cases' tables were unchanged."""
RUNNER_UP_SHARE = 0.5
"""The runner-up pass may use this share of the work the plan took (bounds, ceiling, proof, settling), at least
RUNNER_UP_FLOOR: a search that proves its plan early ends soon after rather than at the limit. GPT-3 13B
on 8x4 at 60 s proved its plan with 6 solves in 2.1 s, and its runner-up pass then took 20 s (356
attempts, 18 s of it on tp1-pp4 interleaved families it left open anyway). A family cut short is shown
with its status and gap, a bound, as a family the proof cut short is."""
RUNNER_UP_FLOOR = 1.0
OPEN_SHOWN = 5
"""With TIME_LIMIT, how many of the layouts left open below the plan the stats name (least bound first)."""
SETTLE_SHARE = 0.05
"""Of the time limit, what is kept for raising the bounds of the candidates it left unvisited (`settle`)."""
SETTLE_TAKES = 0.5
"""Settling comes before the runner-ups and may also take this share of what the proof left of the limit:
the plan's gap is worth more than the runner-up table. Llama 3 405B on 8x2048 at 60 s: nine tp8-pp32
interleaved v3 candidates stayed open at their discrete floors (6.57 s/step, a 13.8% gap) because the
reserve ran out before their LP floors (8.2-9.0 s/step, 0.35 s each)."""


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
    solver statistics, in four passes over the candidates (cheapest kind first, `solve_cost`, each
    kind in order of its lower bounds). The proof (`prove`): each solve is told to beat the best so far
    and stops as soon as it cannot. Deepening (`deepen`): the candidates it left open are solved again,
    each with an equal share of what the proof has left. Settling (`settle`): the bounds of the
    candidates left unvisited raised, so the gap is as true as the floors allow. The runner-ups
    (`runner_ups`): with at most half the work the plan took (`RUNNER_UP_SHARE`), each other layout
    family's best within RUNNER_UP_MARGIN of the best (`table.py`). The runner-up table is filled after the proof, so it
    never takes the proof's time; each runner-up's status is its family's (`family_best`)."""
    t0 = time.perf_counter()
    batch = c.global_batch or default_global_batch(cm.world)
    excluded: dict[str, int] = {}
    rings = cm.ring_ranks_priced()
    bounded, too_big = _bounded(cm, c, batch, excluded)
    deadline = t0 + c.time_limit  # the clock's hard bound (budget.py)
    work = Budget(WORK_SHARE * c.time_limit * (1 - SETTLE_SHARE), wall_deadline=deadline - SETTLE_SHARE * c.time_limit)
    work.spend(WORK_PER_BOUND * (len(bounded) + too_big) + WORK_PER_RING_RANK * (cm.ring_ranks_priced() - rings))
    top: list[Candidate] = ceiling(cm, _warm(bounded), batch, c.recompute, work, c.top_k + 1)
    bounded.sort(key=lambda x: (solve_cost(x[2]), x[0], x[1]))
    run = Run(cm, c, batch, bounded, top, work, progress)
    proof = work.child(PROOF_SHARE * work.left())
    prove(run, proof)
    deepen(run, proof)
    reserve = WORK_SHARE * c.time_limit * SETTLE_SHARE
    tail = Budget(reserve + SETTLE_TAKES * max(0.0, work.left()), wall_deadline=deadline)
    settle(run, tail)
    work.spend(max(0.0, tail.used - reserve))
    runner_ups(run, work.child(max(RUNNER_UP_FLOOR, RUNNER_UP_SHARE * work.used)))
    top[1:] = [family_best(run, r) for r in top[1:]]
    solved = len(run.solved)  # candidates solved at least once; the others were pruned or never reached
    counts = dict(candidates=len(bounded) + too_big, pruned=len(bounded) - solved + too_big, solved=solved,
                  did_not_fit=len(run.no_fit) + too_big)
    left = [(b, run.bounded[i][2].label(recompute=False)) for i, b in run.open.items()]
    return _result(cm, c, batch, top, left, counts, excluded, time.perf_counter() - t0)


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


def _result(cm: CostModel, c: Constraints, batch: int, top: list[Candidate], left: list[tuple[float, str]],
            counts: dict, excluded: dict, wall: float) -> SearchResult:
    """The search is OPTIMAL unless a candidate left open by the time limit (`left`: its bound and
    layout) may still beat the best (a runner-up family's solve that stopped early above the best
    leaves the plan proved); the gap is how much the best open bound could undercut it, and the stats
    name the open layouts (`open`), least bound first, so that a gap says what holds it."""
    gap, status, below = 0.0, "OPTIMAL", []
    if top:
        best = top[0].estimate.step_time_s
        below = sorted((b, layout) for b, layout in left if b < best * (1 - 1e-9))
        if below:
            status, gap = "TIME_LIMIT", (best - below[0][0]) / best
    shown: dict[str, float] = {}
    for b, layout in below:
        if len(shown) == OPEN_SHOWN:
            break
        shown.setdefault(layout, b)
    stats = SolverStats(wall_s=wall, status=status if top else "INFEASIBLE", gap=gap, **counts,
                        excluded=dict(sorted(excluded.items())), not_searched=dict(EXCLUDED),
                        open=shown, open_total=len(below))
    if not top:
        return SearchResult(None, [], stats, batch, explain.why_nothing(cm, c, batch, counts["candidates"] > 0))
    best, rest = top[0], top[1:]
    shown = [replace(r, why_not=explain.why_not(best.estimate, r.estimate, r.solver_status, r.gap)) for r in rest]
    return SearchResult(best, shown, stats, batch)


def _warm(bounded: list[tuple]) -> list[tuple]:
    """The first WARM_START candidates of each kind, in order of their bounds: a good plan is often of
    a kind whose bounds are not the least (GPT 1T on 8x384: one chunk per rank, pp 32, whose seed runs
    69.69 s/step, was once the 30th candidate solved), and a strong first ceiling prunes the hard
    solves of the candidates before it. Further seeds come after the floor sweep (`reseed`)."""
    seen: dict[int, int] = {}
    out = []
    for x in bounded:
        k = solve_cost(x[2])
        if seen.get(k, 0) < WARM_START:
            seen[k] = seen.get(k, 0) + 1
            out.append(x)
    return out
