"""Paths through one simulated schedule, as the constraints the exact partition's master learns.

A path is a chain of actions that must run one after another (a rank's order, a forward's send to
the next chunk, a backward's to the one before); its length (durations and sends along it, plus the
end terms of the rank where it ends) is at most the step time, whatever the assignment. Counted as
('F' | 'B' | 'S', chunk) it is linear in the chunk times: one master constraint.

- `critical`: per rank, a longest path to its last action (the simulation's tight edges).
- `steady`: per rank, the longest path that runs its whole steady state - every action from its last
  warm-up forward to its first cool-down backward - entered by the longest path into a warm-up action
  and left by the longest path out of a cool-down action. When that rank is the bottleneck, this is
  the step's critical path: the pipeline's fill, the rank's work, then a drain that leaves the rank
  before its cool-down ends (GPT-3 175B tp4-pp8 interleaved v2: rank 5's work, left 12 backwards
  early, through ranks 4..0 and the last micro-batch's backward). The critical paths of one
  assignment name only its own bottleneck; these name every rank's, with the fill and drain this
  assignment gives it, so the master cannot move work onto a rank while ignoring its drain.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from planner.cost.schedule import Action

__all__ = ["critical", "steady"]

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


def steady(orders: list[list[Action]], events: list[Event], fwd: Sequence[int], bwd: Sequence[int],
           send: Sequence[int], extra: Sequence[int]) -> tuple[tuple[int, Counter], ...]:
    """Per rank, (the rank whose end terms the path takes, its counts): the longest path through the
    rank's whole steady state (module docstring). `extra[r]`: rank r's end terms."""
    chunks, pp = len(fwd), len(orders)
    at = {(c, k, m): s for _, c, k, m, s, _ in events}
    ends = {(c, k, m): e for _, c, k, m, _, e in events}
    prev = {b: a for order in orders for a, b in zip(order, order[1:])}
    nxt = {a: b for order in orders for a, b in zip(order, order[1:])}
    dur = {a: fwd[a[0]] if a[1] == "F" else bwd[a[0]] for a in at}
    tail, step = _tails(at, dur, nxt, send, extra, chunks, pp)
    out = []
    for r, order in enumerate(orders):
        first_b = next(i for i, a in enumerate(order) if a[1] == "B")
        last_warm, first_cool = max(0, first_b - 1), len(order) - first_b
        pre = [0]
        for a in order:
            pre.append(pre[-1] + dur[a])
        i = max(range(last_warm + 1), key=lambda i: (at[order[i]] - pre[i], -i))
        j = max(range(min(first_cool, len(order) - 1), len(order)),
                key=lambda j: (pre[j + 1] + _leave(order[j], r, j == len(order) - 1, tail, send, extra, chunks), j))
        counts: Counter = Counter()
        _back(order[i], at, ends, prev, send, chunks, counts)
        for a in order[i:j + 1]:
            counts[(a[1], a[0])] += 1
        out.append((_forward(order[j], r, j == len(order) - 1, tail, step, send, extra, chunks, pp, counts), counts))
    return tuple(out)


def _succ(a: Action, send: Sequence[int], chunks: int) -> tuple[Action, int, int | None] | None:
    """The action that waits for `a`'s result on another rank (or F -> B on the last chunk), the send
    on that edge and its index in `send`."""
    c, k, m = a
    if k == "F":
        return ((c + 1, "F", m), send[c], c) if c < chunks - 1 else ((c, "B", m), 0, None)
    return ((c - 1, "B", m), send[c - 1], c - 1) if c else None


def _tails(at: dict, dur: dict, nxt: dict, send: Sequence[int], extra: Sequence[int], chunks: int, pp: int):
    """Per action, the longest path from its start to an end (that rank's end terms included), and the
    step it takes: None (it ends there), or the next action on its rank or across an edge."""
    tail: dict = {}
    step: dict = {}
    for a in sorted(at, key=lambda a: -at[a]):  # a successor always starts later
        best, how = (extra[a[0] % pp], None) if a not in nxt else (tail[nxt[a]], nxt[a])
        s = _succ(a, send, chunks)
        if s is not None and s[1] + tail[s[0]] > best:
            best, how = s[1] + tail[s[0]], s[0]
        tail[a], step[a] = dur[a] + best, how
    return tail, step


def _leave(a: Action, r: int, last: bool, tail: dict, send: Sequence[int], extra: Sequence[int], chunks: int) -> int:
    """The longest path out of rank r after `a` ends, not through r's next action."""
    s = _succ(a, send, chunks)
    out = s[1] + tail[s[0]] if s is not None else -1
    return max(out, extra[r]) if last else out


def _forward(a: Action, r: int, last: bool, tail: dict, step: dict, send: Sequence[int], extra: Sequence[int],
             chunks: int, pp: int, counts: Counter) -> int:
    """Add to `counts` the longest path out of rank r after `a` (`_leave`); the rank where it ends."""
    s = _succ(a, send, chunks)
    if s is None or (last and extra[r] >= s[1] + tail[s[0]]):
        return r
    cur, hop = s[0], s[2]
    while True:
        if hop is not None:
            counts[("S", hop)] += 1
        counts[(cur[1], cur[0])] += 1
        nxt = step[cur]
        if nxt is None:
            return cur[0] % pp
        edge = _succ(cur, send, chunks)
        hop = edge[2] if edge is not None and nxt == edge[0] else None
        cur = nxt
