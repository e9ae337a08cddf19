"""Plans without the solver, to start the search from: the best plan so far is the ceiling every solve
is told to beat, so the lower it starts, the more candidates the discrete floor rules out unsolved."""
from __future__ import annotations

from dataclasses import replace

from planner.cost.model import CostModel, even_split
from planner.search.budget import (WORK_PER_CANDIDATE, WORK_PER_ESTIMATE_ACTION, WORK_PER_FLOOR_ACTION, WORK_PER_FLOOR_LAYER,
                                   WORK_PER_SEED_LAYER, Budget)
from planner.search.floor import floor
from planner.search.seeding import seed
from planner.search.pricing import Candidate, polished, problem
from planner.search.table import RUNNER_UP_MARGIN, keep
from planner.types.strategy import Strategy

__all__ = ["ceiling", "by_floor", "estimate_work", "seed_work", "floor_work", "FLOOR_SEEDS"]

FLOOR_SEEDS = 20
"""How many of the candidates the floor sweep lets through, those with the least floors, `by_floor`
prices by their seeds."""
POLISH_SHARE = 0.5
"""Of what `by_floor`'s budget has left after the seeds, what local search on the best of them may use
(`pricing.polished`)."""


def estimate_work(cm: CostModel, s: Strategy) -> float:
    """What one estimate of `s` costs (budget.py): per layer of the model, and per schedule action."""
    return WORK_PER_CANDIDATE * len(cm.kinds) + WORK_PER_ESTIMATE_ACTION * 2 * s.num_micro_batches * s.chunks


def seed_work(cm: CostModel, s: Strategy) -> float:
    """What `s`'s partition problem and seed plan cost (`pricing.problem`, `seeding.seed`; budget.py)."""
    return WORK_PER_SEED_LAYER * len(cm.kinds) + WORK_PER_ESTIMATE_ACTION * 2 * s.num_micro_batches * s.chunks


def floor_work(cm: CostModel, s: Strategy) -> float:
    """What one discrete floor of `s` costs (`floor.floor`; budget.py): a few times less than an estimate."""
    return WORK_PER_FLOOR_LAYER * len(cm.kinds) + WORK_PER_FLOOR_ACTION * 2 * s.num_micro_batches * s.chunks


def ceiling(cm: CostModel, bounded: list[tuple], batch: int, fixed: str | None, work: Budget,
            size: int = 1) -> list[Candidate]:
    """A plan to start from (and to return if the time limit comes first), without the solver: among
    `bounded` ((lower bound, label, strategy) each), the best of the even split with one recompute mode
    everywhere and the discrete floor's seed (`seeding.seed`: greedy ranges per rank with the least
    recompute that fits). Solves are told they must beat it, so the hopeless ones stop at once. Once a
    plan exists and `work` is spent, it stops: the time limit holds (GPT 1T on 8x384 at 8 s took 10.8 s).
    Returned as a table (`table.keep`, `size` long): the best plan first, then the best of each other
    family it priced within RUNNER_UP_MARGIN of the best (the table's scope), so that the runner-up
    pass starts from their step times rather than from an empty table (whose cutoff is RUNNER_UP_MARGIN
    above the best: a family far behind was solved to its optimum first, only to drop out later)."""
    top: list[Candidate] = []
    for lb, _, s in bounded:
        if top and work.spent():
            break
        tries = [replace(s, recompute=(mode,) * s.chunks) for mode in ((fixed,) if fixed else ("none", "selective", "full"))]
        seeded = seed(cm, s, problem(cm, s), lb, 4 * lb) if fixed is None else None
        work.spend(seed_work(cm, s))
        for t in ([seeded] if seeded else []) + tries:
            work.spend(estimate_work(cm, t))
            e = cm.estimate(t, batch)
            if e.feasible:
                placed = t if t.layers_per_chunk else replace(t, layers_per_chunk=even_split(cm.profile, s.chunks))
                keep(top, Candidate(placed, e, lb, "HEURISTIC"), size)
                if t is not seeded:
                    break  # the least recompute mode that fits the even split
    return [t for t in top if t is top[0] or t.estimate.step_time_s < RUNNER_UP_MARGIN * top[0].estimate.step_time_s]


def by_floor(cm: CostModel, bounded: list[tuple], survivors: list[int], cut: float, batch: int,
             work: Budget) -> tuple[Candidate | None, dict[int, float]]:
    """The survivors' discrete floors (`floor.floor`, `floor_work` each; index -> seconds), and
    the best seed plan (`ceiling`) of the FLOOR_SEEDS with the least floors, after local search
    (`pricing.polished`). The first ceiling takes the
    candidates with the least cheap bounds of each kind; the best plan may lie far behind them (GPT 1T
    on 8x384: tp8-pp32-dp12 interleaved v4, cheap bound 58.8, the 172nd of 3,630 interleaved candidates,
    floor 63.3; its seed runs 64.9 s/step, where the first ceiling's 1F1B plan ran 69.7)."""
    floors: dict[int, float] = {}
    for i in survivors:
        if work.spent():
            break
        lb, _, s = bounded[i]
        work.spend(floor_work(cm, s))
        floors[i] = floor(cm, s, lb, cut, rel=1e-5)
    least = sorted(floors, key=lambda i: (floors[i], i))[:FLOOR_SEEDS]
    top = ceiling(cm, [bounded[i] for i in least], batch, None, work)
    if top and not work.spent():  # the best seed after local search, with at most half of what is left
        share = work.child(POLISH_SHARE * work.left())
        top = [polished(cm, top[0], batch, share)]
        work.spend(share.used)
    return (top[0] if top else None), floors
