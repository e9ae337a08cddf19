"""Plans from the path floor's LP (an LP dive): the LP's point rounded to an assignment that fits, then
local search; the longest paths of what it simulated go back into the LP, which moves on, and is
rounded again.

Where the LP floor is close to the optimum, its point is close to a good assignment, and local search
alone is not: Llama 3 405B tp8-pp16-dp4x32 interleaved v3 on 8x2048 H100 (48 chunks of 2-3 blocks, 16
micro-batches). The seed plan after local search ran 7.622 s/step, a local optimum even for moves of a
block between any two chunks; simulated annealing (2 minutes, 170k steps) reached 7.418. Dives of 20
work units (11.7 s) reach 7.322, against a path floor of 6.98 (2026-12-03). Where the LP averages across
ranks (GPT-3 175B tp4-pp8 v2/v3: LP 43.8, optimum near 46.1) its point rounds to 47-49 s/step, and the
dive finds nothing: the branching over ranks' totals (`totals.py`) does better there.
"""
from __future__ import annotations

import itertools
import math

from planner.search.budget import WORK_PER_PATH_ACTION, WORK_PER_ROUNDED_CHUNK, Budget
from planner.search.local import improve
from planner.search.partition import Problem, Solution, evaluate, part, parts_of, rank_fits
from planner.search.relax import Kelley

__all__ = ["dive", "rounded", "DIVE_ROUNDS", "DIVE_SLACK"]

DIVE_ROUNDS = 20
"""Kelley rounds (`relax.Kelley`) between two roundings. Llama 3 405B tp8-pp16-dp4x32 v3: 0, 10, 40 and 190
rounds of the floor before one rounding give 7.78, (8.6 rounded), 7.57 and 7.51 s/step after local search;
dives of 20 rounds each reach 7.39 at the third, 7.32 at the fifth (2026-12-03)."""

DIVE_SLACK = 0.05
"""A rounding whose local optimum is more than this share above the step to beat ends the dive: there the
LP's point is far from the good assignments, and later points are no nearer. After local search, the
first rounding of 405B tp8-pp16-dp2x64 v3 ends 1.3% above the 7.622 s/step to beat and the second below
it (7.435); the first of GPT-3 175B tp4-pp8 v4 ends 7.2% above its 46.14, and later ones no nearer
(2026-12-03)."""


def dive(p: Problem, paths: dict, budget: Budget, target: int | None = None) -> tuple[Solution | None, int]:
    """The best assignment of `p` (identical blocks, a pipeline) that dives find within `budget` (None
    when none fits), and the path floor they proved (problem units; certified, `relax.Kelley`). The
    paths found join `paths`. Stops when the budget is spent, when no cut is left and the LP's point
    rounds to an assignment it already tried, or when a rounding ends more than DIVE_SLACK above
    `target` (the step to beat, problem units)."""
    orders = p.orders()
    vectors = p.vectors()
    actions = sum(len(o) for o in orders)
    kelley = Kelley(p, paths, budget)
    best, seen = None, set()
    while not budget.spent():
        done = kelley.run(budget, DIVE_ROUNDS)
        point = kelley.point()
        budget.spend(WORK_PER_ROUNDED_CHUNK * p.chunks)
        found = None if point is None else rounded(p, vectors, *point)
        if found is None or (done and found in seen):
            break
        if found in seen:
            continue
        seen.add(found)
        score = evaluate(p, *found, orders, vectors, paths=True)
        budget.spend(WORK_PER_PATH_ACTION * actions)
        for r, counts in enumerate(score.paths):
            kelley.add(r, counts, budget)
        out, more = improve(p, Solution(*found, score.objective, "HEURISTIC"), orders, vectors, paths, budget)
        for per_rank in more:
            for r, counts in enumerate(per_rank):
                kelley.add(r, counts, budget)
        if best is None or out.objective < best.objective:
            best = out
        if target is not None and out.objective > target * (1 + DIVE_SLACK):
            break
    return best, kelley.bound()


def rounded(p: Problem, vectors, blocks, full, sel) -> tuple[tuple, tuple, tuple] | None:
    """An LP point (per chunk: blocks, and blocks under full and selective recompute, reals) as an
    assignment that fits: each rank's total rounded (largest remainder, the model's blocks kept), then
    its chunks' blocks within it; each chunk's recompute in the LP's proportion; then per rank more
    recompute while it does not fit (a block of its first chunk that has one to none -> selective, then
    selective -> full), and less while it still fits (from its last chunk). None when a rank cannot fit."""
    C, pp = p.chunks, p.pp
    totals = _round_sum([sum(blocks[r::pp]) for r in range(pp)], sum(p.is_block), p.vpp)
    nb = [0] * C
    for r in range(pp):
        mine = list(range(r, C, pp))
        for c, n in zip(mine, _round_sum([blocks[c] for c in mine], totals[r], 1)):
            nb[c] = n
    fu = [min(n, round(f * n / max(b, 1e-9))) for f, b, n in zip(full, blocks, nb)]
    se = [min(n - f, round(g * n / max(b, 1e-9))) for g, b, n, f in zip(sel, blocks, nb, fu)]
    bounds = tuple(n + (c == 0) * p.lead + (c == C - 1) * p.tail for c, n in enumerate(nb))
    starts = list(itertools.accumulate(bounds, initial=0))
    parts = parts_of(p, bounds, fu, se)
    for r in range(pp):
        mine = list(range(r, C, pp))

        def fits(c: int, df: int, ds: int) -> bool:
            fu[c], se[c] = fu[c] + df, se[c] + ds
            parts[c] = part(p, starts, c, fu[c], se[c])
            return rank_fits(p, parts, vectors, r)
        while not rank_fits(p, parts, vectors, r):
            c = next((c for c in mine if fu[c] + se[c] < nb[c]), None)
            if c is not None:
                fits(c, 0, 1)  # a block with none -> selective
                continue
            c = next((c for c in mine if se[c] > 0), None)
            if c is None:
                return None
            fits(c, 1, -1)  # selective -> full
        lighter = True
        while lighter:
            lighter = False
            for c, (df, ds) in itertools.product(reversed(mine), ((-1, 1), (0, -1))):
                if fu[c] + df >= 0 and se[c] + ds >= 0:
                    if fits(c, df, ds):
                        lighter = True
                        break
                    fits(c, -df, -ds)
    return bounds, tuple(fu), tuple(se)


def _round_sum(values, total: int, least: int) -> list[int]:
    """`values` as integers of at least `least` each that sum to `total`: floors, then one more to the
    largest remainders (one less to the largest excesses), ties to the first."""
    out = [max(least, math.floor(v + 1e-9)) for v in values]
    while sum(out) < total:
        j = max(range(len(values)), key=lambda i: (values[i] - out[i], -i))
        out[j] += 1
    while sum(out) > total:
        j = max((i for i in range(len(values)) if out[i] > least), key=lambda i: (out[i] - values[i], -i))
        out[j] -= 1
    return out
