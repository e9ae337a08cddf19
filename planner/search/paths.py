"""Paths through one simulated schedule, as the constraints the exact partition's master learns.

A path is a chain of actions that must run one after another (a rank's order, a forward's send to
the next chunk, a backward's to the one before); its length (durations and sends along it, plus the
end terms of the rank where it ends) is at most the step time, whatever the assignment. Counted as
('F' | 'B' | 'S', chunk) it is linear in the chunk times: one master constraint.

`critical`: per rank, a longest path to its last action (the simulation's tight edges), walked
back by `_back`.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from planner.cost.schedule import Action

__all__ = ["critical"]

Event = tuple[int, int, str, int, float, float]
"""(rank, chunk, "F"/"B", micro-batch, start, end), as `schedule.simulate` records them."""


def critical(orders: list[list[Action]], events: list[Event], send: Sequence[int], chunks: int) -> tuple[Counter, ...]:
    """Per rank, walk back from its last action along edges that were tight (an action started exactly
    when that predecessor ended): the counts of a path whose length is the rank's finish."""
    at = {(c, k, m): s for _, c, k, m, s, _ in events}
    ends = {(c, k, m): e for _, c, k, m, _, e in events}
    prev = {b: a for order in orders for a, b in zip(order, order[1:])}
    out = []
    for order in orders:
        counts: Counter = Counter()
        counts[(order[-1][1], order[-1][0])] += 1
        _back(order[-1], at, ends, prev, send, chunks, counts)
        out.append(counts)
    return tuple(out)


def _back(cur: Action, at: dict, ends: dict, prev: dict, send: Sequence[int], chunks: int, counts: Counter) -> None:
    """Add to `counts` a longest path into `cur` (not `cur` itself): back along tight edges to time 0."""
    while at[cur] > 0:
        c, k, m = cur
        if k == "F":
            dep, hop = ((c - 1, "F", m), c - 1) if c else (None, None)
        else:
            dep, hop = ((c + 1, "B", m), c) if c < chunks - 1 else ((c, "F", m), None)
        if dep is not None and ends[dep] + (send[hop] if hop is not None else 0) == at[cur]:
            if hop is not None:
                counts[("S", hop)] += 1
            cur = dep
        else:
            cur = prev[cur]
        counts[(cur[1], cur[0])] += 1

