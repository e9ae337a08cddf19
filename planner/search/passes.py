"""The passes of the search over its candidates (`search.py` runs them in this order): the floor sweep,
the reseed and the LP sweep before any solve; the proof; deepening; the runner-up families; settling
the bounds of what the limit left unvisited. Each is told its budget; all of them share a `Run`."""
from __future__ import annotations

import math
from dataclasses import replace

from planner.search.budget import Budget
from planner.search.ceiling import by_floor, floor_work
from planner.search.pricing import TIME_UNIT, Candidate
from planner.search.run import PER_SOLVE, Run, share
from planner.search.table import RUNNER_UP_MARGIN, family, keep, table_cutoff
from planner.types.strategy import Strategy

__all__ = ["sweep", "reseed", "lp_sweep", "dive_sweep", "prove", "deepen", "runner_ups", "settle", "family_best"]


def sweep(run: Run, proof: Budget) -> set[int]:
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
            run.clear(i, cut)
    return out


def reseed(run: Run, proof: Budget, ruled_out: set[int]) -> None:
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
    cut = run.best() * (1 + 1e-9) + TIME_UNIT
    for i, f in floors.items():
        if f * (1 - 1e-7) >= cut:
            ruled_out.add(i)
            run.clear(i, cut)


def lp_sweep(run: Run, proof: Budget, ruled_out: set[int]) -> None:
    """After the reseed, with at most a third of the proof: the LP floor (`Run.lp`, up to a second
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
        if lb >= run.best() or i in ruled_out:
            continue
        if run.dominated(i):
            ruled_out.add(i)  # a variant no slower is visited or bounded instead; nothing proved of i itself
        elif run.lp(s, (run.work, proof, share)) >= cut:
            ruled_out.add(i)
            run.clear(i, cut)


DIVE_SHARE = 0.5
"""Of what the proof has left after the LP sweep, what the LP dives (`dive_sweep`) may use (a dive ended
early gives the rest back). Llama 3 405B on 8x2048 at a 60 s limit: at 0.25 its dive had 2.6 units and
found nothing; at 0.5, 10.3 units and 7.435 s/step where the plan had been 7.622 (2026-12-03)."""
DIVES = 1
"""How many schedule shapes the LP dives visit, each once, least LP floor first."""
SIBLING_SHARE = 0.3
"""Of a shape's share, what its other candidates' shared floors (`Run.shared_floor`) may use at least:
Llama 3 405B tp8-pp16 v3, after a dive of 10.3 units on dp2x64 (1,252 paths), its variants dp128, dp4x32,
dp8x16 and dp16x8 from LP floors 6.758-6.932 to 6.961-7.096 s/step, 1.28 units each (2026-12-04)."""
DIVE_CHUNKS = 48
"""Only candidates of at least this many chunks are dived: where the master cannot (Llama 3 405B
tp8-pp16 v3, 48 chunks: one master round in 30 s, at 11.5 s/step). Single dives of 10 units
(2026-12-03), against the searches' plans: 405B pp16 v3 (48 chunks) 7.39-7.44 and v4 (64) 7.65, where
the plan was 7.622; 405B pp16 v2 and pp8 v4 (32 chunks) 8.08 and 8.10; GPT-3 175B pp8 v2 (16) and v4
(32) 47.16 and 49.45 against 46.13; Llama 3 70B pp4 v3 (12) 81.97 against 81.80; GPT 1T pp32 v4 (128)
64.913, the plan. With every shape dived, the 60 s gaps of 175B and 70B rose from 0.65% and 0.02% to
0.8% and 0.2% (the dives' work was their solves')."""


def dive_sweep(run: Run, proof: Budget, ruled_out: set[int]) -> None:
    """After the LP sweep, with at most DIVE_SHARE of the proof: LP dives (`Run.dive`, `dive.py`) on the
    candidates with the least LP floors below the best, one of each schedule shape (its variants in
    sharding level and data-parallel split share its action orders, and its partition problem but for
    their end terms), DIVES shapes, an equal share each. The plans they find lower the best before any
    solve; with what a shape's share has left (SIBLING_SHARE at least), the LP floors of the shape's
    other candidates below the best are raised over the paths its dive found (`Run.shared_floor`)."""
    if run.c.recompute is not None or not run.top:
        return
    below = sorted((run.lps[s], i) for i, (_, _, s) in enumerate(run.bounded)
                   if i not in ruled_out and s.chunks >= DIVE_CHUNKS and 0 < run.lps.get(s, 0.0) < run.best())
    shapes: dict[tuple, list[int]] = {}
    for _, i in below:
        shape = _shape(run.bounded[i][2])
        if len(shapes) < DIVES and shape not in shapes and not run.dominated(i):
            shapes[shape] = [i]
    rest = sorted((run.lps.get(s, lb), i, shape) for i, (lb, _, s) in enumerate(run.bounded)
                  if (shape := _shape(s)) in shapes and i not in ruled_out and lb < run.best())
    for _, i, shape in rest:  # the rest of each shape, least floor (LP or cheap) first
        if i != shapes[shape][0]:
            shapes[shape].append(i)
    share = proof.child(DIVE_SHARE * proof.left())
    for j, (first, *others) in enumerate(shapes.values()):
        run.shown = ("dive", j + 1, len(shapes))
        if run.progress:
            run.progress(*run.shown)
        part = share.child(share.left() / (len(shapes) - j))
        one = part.child((1 - SIBLING_SHARE) * part.left())
        run.dive(first, one)
        part.spend(one.used)
        paths = run.warm[first].paths if first in run.warm else {}  # none when it could not be dived
        for i in others if paths else ():
            if part.spent() or run.lps.get(run.bounded[i][2], 0.0) >= run.best() or run.dominated(i):
                continue
            run.shared_floor(i, paths, part)
        share.spend(part.used)
    for b in (run.work, proof):
        b.spend(share.used)


def _shape(s: Strategy) -> tuple:
    """What a candidate's action orders and chunk times depend on: its variants in sharding level and
    data-parallel split share it."""
    return (s.tp, s.sequence_parallel, s.pp, s.vpp, s.schedule, s.micro_batch_size, s.num_micro_batches)


def prove(run: Run, proof: Budget) -> None:
    """The first pass: every candidate whose lower bound is below the best so far and that the floor
    (`sweep`) lets through, told to beat it. When the proof's budget runs out (and a plan exists), the
    candidates not visited stay open at their lower bounds."""
    done = 0
    ruled_out = sweep(run, proof)
    reseed(run, proof, ruled_out)
    lp_sweep(run, proof, ruled_out)
    dive_sweep(run, proof, ruled_out)
    skip = sorted(ruled_out)
    for i, (lb, _, s) in enumerate(run.bounded):
        if lb >= run.best() or i in ruled_out or run.dominated(i):
            continue  # cannot beat the best, or a variant that dominates it will not
        if run.top and proof.spent():  # never stop before a plan exists
            run.open.update({j: max(b, run.lps.get(t, 0.0)) for j, (b, _, t) in enumerate(run.bounded)
                             if j >= i and j not in ruled_out})
            return
        done += 1
        run.shown = ("search", done, done + run.ahead(i, run.best(), skip))
        run.attempt(i, run.best(), share(proof, PER_SOLVE), of=proof)


def deepen(run: Run, proof: Budget) -> None:
    """The candidates the proof left open below the best, solved on from where they stopped (`master.Warm`)
    in order of their bounds, each with an equal share of what the proof has left, while it lasts."""
    while not proof.spent():
        order = sorted((i for i in run.open if run.open[i] < run.best() and not run.dominated(i)), key=lambda i: (run.open[i], i))
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


SEED_SHARE = 0.25
"""Of the runner-up pass's budget, what seeding the table may use first: the seed plan (`Run.seed_table`)
of each family's first candidate below what it must beat, in the order of the pass. The table then holds
the families' seeds before any is solved, and a family far behind is no longer solved to its optimum
against an empty table's cutoff, only to drop out of it. Llama 3 70B on 8x16 at 60 s: the runner-up pass
6.0 -> 3.5 s (its tp2-pp16/pp32 1F1B families, 93.9-96.6 s/step, had been solved first), the same table
and statuses; GPT 1T's table gained tp8-pp48-dp8 and Megatron's tp8-pp64-dp6 (2026-12-05)."""


def runner_ups(run: Run, budget: Budget) -> None:
    """Within `budget`, the best plan of each other layout family: every candidate whose bound is below
    what it must beat (`table.table_cutoff`), told to beat that. None when none are asked for (`top_k` 0)."""
    if run.c.top_k == 0:
        return
    seeds, seen = budget.child(SEED_SHARE * budget.left()), set()
    for i, (lb, _, s) in enumerate(run.bounded):
        cutoff = table_cutoff(run.top, s, run.c.top_k + 1)
        if seeds.spent():
            break
        if lb < cutoff and family(s) not in seen and not run.dominated(i):
            seen.add(family(s))
            run.seed_table(i, cutoff, seeds)
    budget.spend(seeds.used)
    done = 0
    for i, (lb, _, s) in enumerate(run.bounded):
        if budget.spent():
            return
        cutoff = table_cutoff(run.top, s, run.c.top_k + 1)
        if lb >= cutoff or run.dominated(i):
            continue
        done += 1
        run.shown = ("runner-ups", done, done + run.ahead(i, RUNNER_UP_MARGIN * run.best()))
        run.attempt(i, cutoff, share(budget, PER_SOLVE), of=budget)


def settle(run: Run, budget: Budget) -> None:
    """Candidates the limit left unvisited are open at their cheap lower bounds. Raise them, least
    first, to the discrete floor, then to the LP floor (`Run.raise_bound`, as a solved candidate's is
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
            if run.dominated(i):  # a variant no slower stays open or is resolved: its bound holds for i
                del run.open[i]
                continue
            budget.spend(floor_work(run.cm, run.bounded[i][2]))
            run.open[i] = run.raise_bound(run.bounded[i][2], b, best, (budget,), lp)
            settled = min(settled, run.open[i])


def family_best(run: Run, cand: Candidate) -> Candidate:
    """A runner-up with the status and gap of its figure as its family's best, not of its own solve
    (an OPTIMAL solve of one micro-batch size says nothing of the others; a starting plan is its
    family's best once every other member is proved no faster): OPTIMAL when every candidate of the
    family is proved to have nothing below it (its bound, a cutoff it could not beat, its optimum, or
    a variant in the family that dominates it), else TIME_LIMIT with the gap to the least of those."""
    step, fam = cand.estimate.step_time_s, family(cand.strategy)
    below = (i for i, (_, _, s) in enumerate(run.bounded) if family(s) == fam and run.least(i) < step * (1 - 1e-9))
    least = min((run.least(i) for i in below if not run.dominated(i)), default=math.inf)
    if least >= step * (1 - 1e-9):
        return replace(cand, solver_status="OPTIMAL", gap=0.0)
    return replace(cand, solver_status="TIME_LIMIT", gap=(step - least) / step)
