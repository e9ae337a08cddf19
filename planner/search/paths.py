"""Paths through one simulated schedule, as the constraints the exact partition's master learns.

A path is a chain of actions that must run one after another (a rank's order, a forward's send to
the next chunk, a backward's to the one before); its length (durations and sends along it, plus the
end terms of the rank where it ends) is at most the step time, whatever the assignment. Counted as
('F' | 'B' | 'S', chunk) it is linear in the chunk times: one master constraint.

`critical`: per rank, a longest path to its last action (the simulation's tight edges), walked
back by `_back`. `seed_paths`: paths valid for every assignment, read off the orders alone, that a
master starts from (and the LP floor, `relax.py`, is built on).
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from planner.cost.schedule import Action, Program

__all__ = ["critical", "seed_paths", "key", "pool"]

def critical(prog: Program, end: Sequence[float], dur: Sequence[float], send: Sequence[float]) -> tuple[Counter, ...]:
    """Per rank, walk back from its last action along edges that were tight (an action started exactly
    when that predecessor ended): the counts of a path whose length is the rank's finish. `end` is
    `prog.ends(...)` at the chunk durations `dur` (forwards, then backwards) and sends `send`. Counted
    by index (durations, then sends) and keyed in the order first met."""
    k = prog.chunks
    dur_of, deps, hops, prev = prog.wait[4], prog.back[0], prog.back[1], prog.prev
    names = [("F", c) for c in range(k)] + [("B", c) for c in range(k)] + [("S", c) for c in range(k)]
    out = []
    for r in range(len(prog)):
        cur = prog.last[r]
        seen, count = [dur_of[cur]], [0] * (3 * k)
        count[dur_of[cur]] = 1
        while (start := end[cur] - dur[dur_of[cur]]) > 0:
            dep, hop = deps[cur], hops[cur]
            if dep >= 0 and end[dep] + (send[hop] if hop >= 0 else 0) == start:
                if hop >= 0:
                    if not count[2 * k + hop]:
                        seen.append(2 * k + hop)
                    count[2 * k + hop] += 1
                cur = dep
            else:
                cur = prev[cur]
                if cur < 0:
                    raise ValueError("no tight edge into a rank's first action: times not exact (integers)")
            u = dur_of[cur]
            if not count[u]:
                seen.append(u)
            count[u] += 1
        out.append(Counter({names[i]: count[i] for i in seen}))
    return tuple(out)


def key(r: int, counts: Counter) -> tuple:
    """The key of rank r's path `counts` in a pool of paths (a dict from key to counts)."""
    return r, frozenset(counts.items())


def pool(found) -> dict:
    """A pool of the paths in `found`, (rank, counts) pairs: each keyed by `key`."""
    return {key(r, c): c for r, c in found}


def seed_paths(pp: int, vpp: int, n: int, orders: list[list[Action]], rounds: bool = False) -> list[tuple[int, Counter]]:
    """Paths every assignment obeys, each with the rank whose end terms it carries: each rank's fill,
    then all its work; with one chunk per rank its drain too and `_through_paths`; with `rounds`, the
    fill and drain of every round of chunks (`_round_paths`). The master starts without the rounds:
    they make its first rounds far slower (GPT-3 175B tp4-pp8 v2: 9.7 s against 0.8 s) for a bound it
    reaches anyway; the LP floor (`relax.py`) is built on them."""
    if vpp == 1:
        return _round_paths(pp, 1, n, orders) + _through_paths(orders)
    return _round_paths(pp, vpp if rounds else 1, n, orders, drain=rounds)


def _round_paths(pp: int, vpp: int, n: int, orders: list[list[Action]], drain: bool = True) -> list[tuple[int, Counter]]:
    """Rank r's first forward of its j-th chunk r + j pp waits for micro-batch 0's forwards through every
    chunk before it; from there r runs its order up to its end, or up to the last backward of that
    chunk, which micro-batch n - 1's backwards follow down through every chunk below it to rank 0.
    j = 0 is the pipeline's fill and drain; the later rounds are interleaving's bubble: a chunk's
    micro-batches wait for the whole round of chunks before it, so small first chunks do not hide it
    (Llama 3 405B tp8-pp16 v2 with 16 micro-batches: the LP over these paths 7.10 s/step, over fill
    and own work alone 6.07). Pairing round j's fill with every round's drain adds 0.1% to that LP for
    twice its rows (GPT 1T tp8-pp32 v4: 0.57 -> 1.09 s). 2 p vpp paths; without drains when asked."""
    out = []
    for r, order in enumerate(orders):
        at = {a: i for i, a in enumerate(order)}
        for j in range(vpp):
            i0, fill = at[(r + j * pp, "F", 0)], Counter()
            for c in range(r + j * pp):
                fill[("F", c)] += 1
                fill[("S", c)] += 1
            out.append((r, fill + Counter((k, c) for c, k, _ in order[i0:])))
            i1 = at[(r + j * pp, "B", n - 1)]
            if drain and i1 >= i0:
                down = fill + Counter((kind, c) for c, kind, _ in order[i0:i1 + 1])
                for c in range(r + j * pp):
                    down[("B", c)] += 1
                    down[("S", c)] += 1
                out.append((0, down))
    return out


def _through_paths(orders: list[list[Action]]) -> list[tuple[int, Counter]]:
    """Rank r's first backward B(c0, m) waits for micro-batch m's forward through every chunk and its
    backward back down to chunk c0 + 1; from there rank r runs the rest of its order, and its last
    backward returns through the chunks below it to rank 0. These paths carry the chunks after r (the
    pipeline's fill and drain, which the seed paths lack). Valid for any order, used with one chunk per
    rank: with interleaving they made the master larger without making the search better (GPT-3 13B on
    8x4 at a 30-unit limit: 12.24 s/step, gap 2.5%, against 12.16 s, 0.7% without them)."""
    chunks = 1 + max(c for order in orders for c, _, _ in order)
    out = []
    for r, order in enumerate(orders):
        i0 = next(i for i, a in enumerate(order) if a[1] == "B")
        c0 = order[i0][0]
        counts: Counter = Counter()
        for c in range(chunks):
            counts[("F", c)] += 1
            if c > c0:
                counts[("B", c)] += 1
            if c < chunks - 1:
                counts[("S", c)] += 2 if c >= c0 else 1
        for c, k, _ in order[i0:]:
            counts[(k, c)] += 1
        out.append((r, Counter(counts)))
        last = order[-1][0]
        for c in range(last):
            counts[("B", c)] += 1
            counts[("S", c)] += 1
        out.append((0, counts))
    return out
