"""The plan table: the best plan of each layout family, fastest first, and what a candidate must beat
to change it (the runner-ups are each other family's best, so "why it loses" compares like with like)."""
from __future__ import annotations

import math

from planner.search.pricing import Candidate
from planner.types.strategy import Strategy

__all__ = ["RUNNER_UP_MARGIN", "family", "keep", "table_cutoff"]

RUNNER_UP_MARGIN = 1.25
"""A layout family is solved for the runner-up table only as far as it can come within 25% of the best."""


def table_cutoff(top: list[Candidate], s: Strategy, size: int) -> float:
    """What `s` must beat to change the runner-up table: its family's best so far, or, for a family not
    shown, the slowest entry once the table is full; and within RUNNER_UP_MARGIN of the best either way.
    -inf for the best plan's own family (the proof already found its best)."""
    if not top:
        return math.inf
    fam = family(s)
    if family(top[0].strategy) == fam:
        return -math.inf
    cut = RUNNER_UP_MARGIN * top[0].estimate.step_time_s
    same = [t.estimate.step_time_s for t in top if family(t.strategy) == fam]
    if same:
        return min(cut, same[0])
    return min(cut, top[-1].estimate.step_time_s) if len(top) >= size else cut


def family(s: Strategy) -> tuple:
    """Strategies that differ only in sharding level or micro-batch size are one layout family: the
    runner-ups show the best of each other family rather than near-copies of the winner."""
    return (s.tp, s.pp, s.dp, s.schedule, s.vpp)


def keep(top: list[Candidate], cand: Candidate, size: int) -> None:
    """Insert `cand` keeping the best per family, sorted by step time (label breaks ties), `size` long."""
    key = family(cand.strategy)
    same = [t for t in top if family(t.strategy) == key]
    if same and (same[0].estimate.step_time_s, same[0].strategy.label()) <= (cand.estimate.step_time_s, cand.strategy.label()):
        return
    top[:] = [t for t in top if family(t.strategy) != key] + [cand]
    top.sort(key=lambda x: (x.estimate.step_time_s, x.strategy.label()))
    del top[size:]
