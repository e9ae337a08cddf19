"""Local search on the exact objective: from an incumbent, move one block (or one block's recompute)
at a time while the simulated step falls.

The master (`master.py`) proves bounds, but its proposals are the relaxation's optima, and its
incumbent is only the best of those: Llama 3 70B tp4-pp4 interleaved v3, after 15 s of master rounds
alone, 85.11 s/step, where 1,663 neighbours simulated in 2.6 s reached 81.94 (the search had answered
82.08). Every step here is an assignment simulated and checked for memory (`partition.evaluate`), so the
incumbent stays exact; only the cutoff it sets gets tighter, never a bound.

Before a neighbour is simulated, the paths the master has learned price it (`T >= path + end terms`, a
matrix product): one already no faster than the incumbent is skipped. First improvement over a fixed
order of moves: the same incumbent gives the same result.
"""
from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from planner.search.budget import Budget, neighbour_work, simulation_work
from planner.search.partition import Problem, Solution, choices, evaluate, part, rank_extra, rank_fits

__all__ = ["improve", "neighbours", "AFFORD"]

Assignment = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

AFFORD = 100
"""Simulations a budget must pay for before local search starts: a scan skips most neighbours on the
paths' floor but simulates some (GPT 1T tp8-pp32 v4, 65k actions, 0.2 s each: the best seed's search
took 1.8 units and found nothing, and the 1T search solved 3 candidates instead of 11)."""


def neighbours(p: Problem, bounds, full, sel) -> Iterator[Assignment]:
    """Assignments one move away, in a fixed order: a layer from chunk a to a neighbouring chunk b, or,
    interleaved with identical blocks, to another chunk of the same rank (with totals fixed, only
    those), the block gained with no, full or selective recompute; then one block's recompute changed
    in one chunk."""
    blocks = p.blocks_of(bounds)
    choose = p.recompute is None
    if not p.fixed_bounds:
        rank = p.uniform() and p.vpp > 1
        for a, b in itertools.permutations(range(p.chunks), 2):
            same = a % p.pp == b % p.pp
            if not ((rank and same) or abs(a - b) == 1) or (p.totals and not same):
                continue
            moved = _move(p, bounds, a, b)
            if moved is None:
                continue
            new_bounds, new_blocks = moved
            fu, se = list(full), list(sel)
            for c in (a, b):
                fu[c], se[c] = _modes(p, new_blocks[c], fu[c], se[c])
            yield new_bounds, tuple(fu), tuple(se)
            if choose and new_blocks[b] > fu[b] + se[b]:
                yield new_bounds, _plus(fu, b, 1), tuple(se)
                yield new_bounds, tuple(fu), _plus(se, b, 1)
    if choose:
        for c in range(p.chunks):
            for df, ds in ((1, 0), (0, 1), (-1, 0), (0, -1), (1, -1), (-1, 1)):
                f, g = full[c] + df, sel[c] + ds
                if f >= 0 and g >= 0 and f + g <= blocks[c]:
                    yield tuple(bounds), _plus(full, c, df), _plus(sel, c, ds)


def _modes(p: Problem, blocks: int, full: int, sel: int) -> tuple[int, int]:
    """A chunk's (full, selective) counts once it holds `blocks` blocks: the mode every block must run
    when the problem fixes one; else a block that left takes its recompute with it (selective first)."""
    if p.recompute is not None:
        return choices(p, blocks)[0]
    full = min(full, blocks)
    return full, min(sel, blocks - full)


def _plus(values, c: int, d: int) -> tuple[int, ...]:
    out = list(values)
    out[c] += d
    return tuple(out)


def _move(p: Problem, bounds, a: int, b: int) -> tuple[tuple[int, ...], list[int]] | None:
    """Bounds with one layer less in chunk a and one more in chunk b (the layers between shift by one
    chunk), and the blocks per chunk; None when a chunk would lose its last block or the model's
    first or last layers would leave the first or last chunk."""
    new = list(bounds)
    new[a] -= 1
    new[b] += 1
    if new[0] <= p.lead or new[-1] <= p.tail:
        return None
    blocks = p.blocks_of(new)
    return (tuple(new), blocks) if min(blocks) >= 1 else None


def improve(p: Problem, best: Solution, orders, vectors, paths: dict, budget: Budget) -> tuple[Solution, list]:
    """The incumbent `best` moved downhill (`neighbours`, first improvement, each scan going on from the
    move that last improved) until a whole scan finds nothing faster or `budget` runs out; and the
    longest paths of each assignment taken (for the master). Each simulation is charged
    `simulation_work` (again, with paths, for a step taken), each neighbour looked at
    `neighbour_work`; a budget that cannot pay for AFFORD simulations does not start one."""
    actions = sum(len(o) for o in orders)
    if budget.left() < AFFORD * simulation_work(p.chunks, actions):
        return best, []
    price, parts = _Pricer(p, paths), _Parts(p)
    found: list = []
    start, moved = 0, True
    while moved and not budget.spent():
        moved = False
        moves = list(neighbours(p, best.bounds, best.full, best.selective))
        start %= max(1, len(moves))
        base = parts(best.bounds, best.full, best.selective)
        for j, nb, chunks in _fitting(p, moves[start:] + moves[:start], vectors, budget, parts, base):
            if price.floor(chunks) >= best.objective:
                continue
            score = evaluate(p, *nb, orders, vectors)
            budget.spend(simulation_work(p.chunks, actions))
            if score.objective < best.objective:  # simulated again for its paths
                score = evaluate(p, *nb, orders, vectors, paths=True)
                budget.spend(simulation_work(p.chunks, actions, paths=True))
                best = Solution(*nb, score.objective, best.status)
                found.append(score.paths)
                price.add(score.paths)
                start, moved = start + j, True
                break
    return best, found


class _Parts:
    """`partition.parts_of` with each chunk remembered by its layers and recompute: a move changes two
    or three chunks, so a neighbour's parts are mostly lookups."""

    def __init__(self, p: Problem):
        self.p, self.known = p, {}

    def __call__(self, bounds, full, sel) -> list:
        starts = list(itertools.accumulate(bounds, initial=0))
        out = []
        for c in range(self.p.chunks):
            key = (c, starts[c], bounds[c], full[c], sel[c])
            if key not in self.known:
                self.known[key] = part(self.p, starts, c, full[c], sel[c])
            out.append(self.known[key])
        return out


def _fitting(p: Problem, candidates, vectors, budget: Budget, parts_of: _Parts, base: list):
    """(index, assignment, parts) of each candidate that fits in memory (the ranks whose chunks differ from
    `base`, the incumbent's parts, checked: the others fit already); for one that does not, when the
    solver chooses recompute, each repair that fits: one more block recomputed (none -> selective or
    full, selective -> full) in one chunk of the one rank over its cap (a block moved onto a rank whose
    memory binds needs one). Each costs `neighbour_work`; stops when `budget` runs out."""
    for j, nb in enumerate(candidates):
        budget.spend(neighbour_work(p.chunks))
        if budget.spent():
            return
        parts = parts_of(*nb)
        changed = {c % p.pp for c, (x, y) in enumerate(zip(parts, base)) if x is not y}
        over = [r for r in sorted(changed) if not rank_fits(p, parts, vectors, r)]
        if not over:
            yield j, nb, parts
            continue
        if p.recompute is not None or len(over) != 1:
            continue
        bounds, full, sel = nb
        blocks = p.blocks_of(bounds)
        for c in range(over[0], p.chunks, p.pp):
            for df, ds in ((0, 1), (1, 0), (1, -1)):
                f, g = full[c] + df, sel[c] + ds
                if g < 0 or f + g > blocks[c]:
                    continue
                repaired = (bounds, _plus(full, c, df), _plus(sel, c, ds))
                budget.spend(neighbour_work(p.chunks))
                parts = parts_of(*repaired)
                if rank_fits(p, parts, vectors, over[0]):
                    yield j, repaired, parts


class _Pricer:
    """The paths learned so far as a matrix: a neighbour's floor is the longest of them at its chunk
    times plus its rank's end terms (a valid lower bound on its step, whatever the assignment)."""

    def __init__(self, p: Problem, paths: dict):
        self.p = p
        self.extras: dict = {}
        self.rows: list[np.ndarray] = []
        self.ranks: list[int] = []
        for (r, _), counts in paths.items():
            self._row(r, counts)
        self._stack()

    def _row(self, r: int, counts) -> None:
        C = self.p.chunks
        row = np.zeros(3 * C)
        for (kind, c), n in counts.items():
            row["FBS".index(kind) * C + c] += n
        self.rows.append(row)
        self.ranks.append(r)

    def _stack(self) -> None:
        self.matrix = np.array(self.rows) if self.rows else np.zeros((0, 3 * self.p.chunks))
        self.rank = np.array(self.ranks, dtype=int)

    def add(self, per_rank) -> None:
        for r, counts in enumerate(per_rank):
            self._row(r, counts)
        self._stack()

    def _extra(self, parts, r: int) -> int:
        """Rank r's end terms (`partition.rank_extra`), remembered by its chunks' parts."""
        key = (r,) + tuple(parts[r::self.p.pp])
        if key not in self.extras:
            self.extras[key] = rank_extra(self.p, parts, r)
        return self.extras[key]

    def floor(self, parts) -> float:
        if not self.rows:
            return 0.0
        times = np.array([x.fwd for x in parts] + [x.bwd for x in parts] + [x.send for x in parts], dtype=float)
        extra = np.array([self._extra(parts, r) for r in range(self.p.pp)], dtype=float)
        return float(np.max(self.matrix @ times + extra[self.rank]))
