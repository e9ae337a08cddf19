"""An experiment, not the search: a per-rank (Dantzig-Wolfe) relaxation of the partition problem,
against the LP floor the search uses (`relax.lp_floor`), on GPT 1T tp8-pp32-dp12 interleaved v3 on
8x384 (global batch 3072), the candidate that keeps the 1T's 60 s search open (its plan: 64.915 s/step;
the search's CP-SAT proves about 64.64 for it). Run: python benchmarks/rank_relaxation.py [rounds].

Where the LP floor lets every chunk hold a fraction of a block and a fraction of a recompute, here each
pipeline rank mixes whole configurations of its own: blocks per chunk summing to its total (fixed at
what `floor.rank_caps` leaves below the plan: 4 a rank) and each chunk's (full, selective) counts, each
configuration within memory by itself (`partition.rank_fits`), dominated ones dropped. The path rows
(`paths.critical` at the mixed chunk times, Kelley's cutting planes) and the ranks' end terms are linear
in the mixing weights; paths are sought at a point between the LP's and its earlier ones first (in-out,
`relax.IN_OUT`), and GLOP goes on from its last basis. 2026-12-05: 63.58 s/step after 10 rounds (1 s)
against the LP floor's 60.47; 64.64 after 400 rounds (144 s), where the search's CP-SAT proves 64.64 in
about 9 s: strong at once, slow to close (without in-out, 64.24 after 340 rounds). The bound printed is
GLOP's floating-point value, not certified as `relax.certify` certifies the search's bounds."""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

from ortools.linear_solver import pywraplp

from planner.cost.schedule import as_program
from planner.search.master import seed_pool
from planner.search.partition import Problem, choices, part, rank_extra, rank_fits
from planner.search.paths import critical, key
from planner.search.pricing import TIME_UNIT, lp_bound, problem
from planner.search.relax import ATTEMPTS, IN_OUT, solve_lp
from planner.search.space import parse_layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import model  # noqa: E402  (benchmarks/search.py: cached profiles)

CASE = ("examples/gpt.py:gpt_1t", "8x384", 3072, "tp8-pp32-dp12-mbs1-interleaved-v3-zero2-sp", 4)


def _chunk(p: Problem, c: int, n: int, full: int, sel: int):
    """Chunk c with n blocks (identical blocks: where they sit changes nothing but the ends' layers)."""
    a, e = (0, p.lead + n) if c == 0 else (p.layers - p.tail - n, p.layers) if c == p.chunks - 1 else (p.lead, p.lead + n)
    starts = [0] * (p.chunks + 1)
    starts[c], starts[c + 1] = a, e
    return part(p, starts, c, full, sel)


def configurations(p: Problem, r: int, total: int) -> list[tuple[int, ...]]:
    """Rank r's undominated configurations holding `total` blocks, each as its chunks' forward times,
    backward times, sends, then its end term."""
    mine, vectors, out = list(range(r, p.chunks, p.pp)), p.vectors(), []
    for comp in itertools.product(range(1, total + 1), repeat=p.vpp):
        if sum(comp) != total:
            continue
        for modes in itertools.product(*[choices(p, n) for n in comp]):
            parts = [None] * p.chunks
            for c, n, (f, g) in zip(mine, comp, modes):
                parts[c] = _chunk(p, c, n, f, g)
            if rank_fits(p, parts, vectors, r):
                out.append(tuple(parts[c].fwd for c in mine) + tuple(parts[c].bwd for c in mine)
                           + tuple(parts[c].send for c in mine) + (rank_extra(p, parts, r),))
    out.sort()
    front: list[tuple[int, ...]] = []
    for v in out:
        if not any(all(a <= b for a, b in zip(w, v)) for w in front):
            front.append(v)
    return front


def relaxation(p: Problem, total: int, rounds: int) -> None:
    t0 = time.perf_counter()
    configs = [configurations(p, r, total) for r in range(p.pp)]
    print(f"  configurations a rank: {min(map(len, configs))}-{max(map(len, configs))} ({time.perf_counter() - t0:.1f} s)")
    scale = 1.0 / max(max(v) for cs in configs for v in cs)
    lp = pywraplp.Solver.CreateSolver("GLOP")
    lp.SetSolverSpecificParametersAsString(ATTEMPTS[0])  # dual simplex from the last basis, as Kelley's
    step = lp.NumVar(0, lp.infinity(), "T")
    mix = [[lp.NumVar(0, 1, "") for _ in cs] for cs in configs]
    for ws in mix:
        row = lp.Constraint(1, 1)
        for w in ws:
            row.SetCoefficient(w, 1)
    paths: dict = {}
    kinds = {"F": 0, "B": 1, "S": 2}  # a configuration lists its chunks' forwards, backwards, sends

    def add(r: int, counts) -> bool:
        if key(r, counts) in paths:
            return False
        paths[key(r, counts)] = counts
        coef: dict = {}
        for (kind, c), n in counts.items():
            i = kinds[kind] * p.vpp + c // p.pp
            for k, v in enumerate(configs[c % p.pp]):
                coef[(c % p.pp, k)] = coef.get((c % p.pp, k), 0) + n * v[i]
        for k, v in enumerate(configs[r]):
            coef[(r, k)] = coef.get((r, k), 0) + v[-1]
        row = lp.Constraint(0, lp.infinity())
        row.SetCoefficient(step, 1)
        for (q, k), a in coef.items():
            row.SetCoefficient(mix[q][k], -a * scale)
        return True

    prog = as_program(p.orders())
    for (r, _), counts in seed_pool(p, prog).items():
        add(r, counts)
    lp.Objective().SetCoefficient(step, 1)
    lp.Objective().SetMinimization()

    def separate(at: list[float], value: float, point: list[float]) -> int:
        """Each rank's longest path at the chunk times `at`, added when it is longer than `value` at
        `point` (the LP's own): how many were added."""
        k3 = p.chunks
        fwd, bwd, send = ([round(x) for x in at[i * k3:(i + 1) * k3]] for i in range(3))
        end = prog.ends(fwd, bwd, send, [0] + send[:-1])
        added = 0
        for r, counts in enumerate(critical(prog, end, fwd + bwd, send)):
            length = sum(n * point[kinds[kind] * k3 + c] for (kind, c), n in counts.items()) + point[3 * k3 + r]
            if length > value * (1 + 1e-9) + 2:
                added += add(r, counts)
        return added

    centre = None
    for k in range(1, rounds + 1):
        if solve_lp(lp) != pywraplp.Solver.OPTIMAL:  # each of relax.ATTEMPTS in turn
            print("  GLOP found no optimum")
            return
        value = step.solution_value() / scale
        times, extra = [0.0] * (3 * p.chunks), [0.0] * p.pp
        for r, (ws, cs) in enumerate(zip(mix, configs)):
            for w, v in ((w.solution_value(), v) for w, v in zip(ws, cs)):
                for j in range(p.vpp):
                    for i in range(3):
                        times[i * p.chunks + r + j * p.pp] += w * v[i * p.vpp + j]
                extra[r] += w * v[-1]
        point, added = times + extra, 0
        if centre is not None:  # in-out separation, as `relax.Kelley` does (IN_OUT)
            centre = [IN_OUT * a + (1 - IN_OUT) * b for a, b in zip(centre, point)]
            added = separate(centre, value, point)
        else:
            centre = point
        if not added:
            added = separate(point, value, point)
        if k % 10 == 0 or not added:
            print(f"  round {k}: bound {value * TIME_UNIT:.4f} s/step, {len(paths)} paths, {time.perf_counter() - t0:.1f} s",
                  flush=True)
        if not added:
            print("  no path left to add")
            return


if __name__ == "__main__":
    ref, gpus, batch, layout, total = CASE
    cm = model(ref, gpus)
    s = parse_layout(layout, cm.profile, cm.world, batch)
    print(f"{ref} {layout} on {gpus}: LP floor {lp_bound(cm, s)[0]:.4f} s/step; per-rank relaxation at {total} blocks a rank:")
    relaxation(problem(cm, s), total, int(sys.argv[1]) if len(sys.argv) > 1 else 40)
