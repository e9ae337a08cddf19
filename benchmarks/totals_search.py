"""Measurement for the next step of the search's proof (issue 13), not used by the planner yet: branch on
each pipeline rank's block total, bound each branch with the LP floor (`relax.py`) and count what is
left. With every rank's total fixed the LP is strong (GPT-3 175B tp4-pp8 v2: 43.44 s/step with none
fixed, 45.63 at the plan's totals, 48.05 with 12 blocks on every rank), so a depth-first search over
the totals, rank by rank, leaves few compositions below the plan; the master then solves each with its
totals fixed (`Problem.totals`: 46.1296 s/step OPTIMAL for that 175B candidate, where the search's plan
is 46.19). The LP is one GLOP model whose totals rows change bounds between nodes (1.6 ms a node).
A node GLOP finds infeasible is counted as pruned: a measurement, not yet a proof (the LP floor's
elastic certificate would prove it).

Run: python benchmarks/totals_search.py [case layout cutoff], e.g. the defaults:
GPT-3 175B on 8x16, tp4-pp8-dp4 interleaved v2, below 46.19 s/step."""
from __future__ import annotations

import sys
import time
from dataclasses import replace

from ortools.linear_solver import pywraplp

from planner.search.master import solve
from planner.search.pricing import TIME_UNIT, problem
from planner.search.relax import certify, glop_model, linear_model
from planner.search.space import parse_layout
from search import CASES, model


def totals_search(case: int, layout: str, cutoff: float) -> None:
    ref, gpus, batch, gpu = CASES[case]
    cm = model(ref, gpus, gpu)
    p = problem(cm, parse_layout(layout, cm.profile, cm.world, batch))
    m, unit, (rows, objective, domains) = linear_model(p)
    base = len(rows)
    rows += [({m.x.blocks[c].index: 1 for c in range(r, p.chunks, p.pp)}, None, None) for r in range(p.pp)]
    lp, cons, scales = glop_model(rows, objective, domains)
    inf = lp.infinity()
    counts = {"nodes": 0, "infeasible": 0, "pruned": 0}
    leaves: list[tuple[float, tuple[int, ...]]] = []
    cut, total = cutoff / TIME_UNIT / unit, sum(p.is_block)

    def bound(fixed: list[int]) -> float:
        counts["nodes"] += 1
        for r in range(p.pp):
            t = fixed[r] if r < len(fixed) else None
            k = base + r
            cons[k].SetBounds(-inf if t is None else t / scales[k], inf if t is None else t / scales[k])
            rows[k] = (rows[k][0], t, t)
        status = lp.Solve()
        if status != pywraplp.Solver.OPTIMAL:
            counts["infeasible"] += status == pywraplp.Solver.INFEASIBLE
            return float("inf") if status == pywraplp.Solver.INFEASIBLE else 0.0
        return float(certify(rows, objective, domains, [c.dual_value() / s for c, s in zip(cons, scales)]))

    def visit(fixed: list[int]) -> None:
        b = bound(fixed)
        if b >= cut:
            counts["pruned"] += 1
            return
        r = len(fixed)
        if r == p.pp:
            leaves.append((b * unit * TIME_UNIT, tuple(fixed)))
            return
        left, rest = total - sum(fixed), p.pp - r - 1
        for t in ([left] if rest == 0 else range(p.vpp, left - rest * p.vpp + 1)):
            visit(fixed + [t])

    t0 = time.perf_counter()
    visit([])
    print(f"{ref} {layout} below {cutoff}: {counts['nodes']} LPs in {time.perf_counter() - t0:.1f} s "
          f"({counts['infeasible']} infeasible, {counts['pruned']} pruned), {len(leaves)} compositions left:")
    best = int(cutoff / TIME_UNIT)
    for b, t in sorted(leaves):
        t1 = time.perf_counter()
        sol = solve(replace(p, totals=t), time_limit=120, cutoff=best)
        print(f"  LP {b:.4f} s/step at totals {t}: master {sol.status} {sol.objective * TIME_UNIT:.4f} s/step "
              f"in {time.perf_counter() - t1:.1f} s")
        if sol.status == "OPTIMAL":
            best = sol.objective
    print(f"  best below {cutoff}: {best * TIME_UNIT:.4f} s/step" if best < int(cutoff / TIME_UNIT) else "  none below it")


if __name__ == "__main__":
    args = sys.argv[1:] or ["1", "tp4-pp8-dp4-mbs1-interleaved-v2-zero2-sp", "46.19"]
    totals_search(int(args[0]), args[1], float(args[2]))
