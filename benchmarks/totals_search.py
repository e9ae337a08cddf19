"""The search over per-rank block totals (`planner/search/totals.py`), measured against the one it
replaced, in the same run: that one fixed the ranks' totals one after another, an LP for every value of
every rank (session 17's prototype, kept here as the reference), where `totals.branches` splits boxes
of totals at the LP's most fractional rank total. Both must leave the same compositions; then the
master solves each one left with its totals fixed (`Problem.totals`).

Run: python benchmarks/totals_search.py [case layout cutoff [--solve]]; by default GPT-3 175B on 8x16,
tp4-pp8-dp4 interleaved v2, v3 and v4, below 46.13 s/step, and Llama 3 70B tp4-pp4-dp8 v3 below 82.04."""
from __future__ import annotations

import sys
import time
from dataclasses import replace

from ortools.linear_solver import pywraplp

from planner.search.budget import Budget
from planner.search.master import solve
from planner.search.pricing import TIME_UNIT, problem
from planner.search.relax import certify, duals, glop_model, linear_model
from planner.search.space import parse_layout
from planner.search.totals import branches
from search import CASES, model

DEFAULTS = [(1, f"tp4-pp8-dp4-mbs1-interleaved-v{v}-zero2-sp", 46.13) for v in (2, 3, 4)] + \
    [(2, "tp4-pp4-dp8-mbs1-interleaved-v3-zero2-sp", 82.04)]


def rank_by_rank(p, cut: int) -> tuple[list, int]:
    """The reference: ranks' totals fixed one after another, each value an LP (infeasible LPs pruned on
    GLOP's word: it was a measurement)."""
    m, unit, (rows, objective, domains), _ = linear_model(p)
    base = len(rows)
    rows += [({m.x.blocks[c].index: 1 for c in range(r, p.chunks, p.pp)}, None, None) for r in range(p.pp)]
    lp, cons, scales = glop_model(rows, objective, domains)
    inf, total, nodes, leaves = lp.infinity(), sum(p.is_block), [0], []

    def bound(fixed: list[int]) -> float:
        nodes[0] += 1
        for r in range(p.pp):
            t, k = (fixed[r] if r < len(fixed) else None), base + r
            cons[k].SetBounds(-inf if t is None else t / scales[k], inf if t is None else t / scales[k])
            rows[k] = (rows[k][0], t, t)
        status = lp.Solve()
        if status != pywraplp.Solver.OPTIMAL:
            return float("inf") if status == pywraplp.Solver.INFEASIBLE else 0.0
        return float(certify(rows, objective, domains, duals(cons, scales)))

    def visit(fixed: list[int]) -> None:
        b = bound(fixed)
        if b * unit >= cut:
            return
        if len(fixed) == p.pp:
            leaves.append(tuple(fixed))
            return
        left, rest = total - sum(fixed), p.pp - len(fixed) - 1
        for t in ([left] if rest == 0 else range(p.vpp, left - rest * p.vpp + 1)):
            visit(fixed + [t])

    visit([])
    return sorted(leaves), nodes[0]


def compare(case: int, layout: str, cutoff: float, solve_leaves: bool) -> None:
    ref, gpus, batch, gpu = CASES[case]
    cm = model(ref, gpus, gpu)
    p = problem(cm, parse_layout(layout, cm.profile, cm.world, batch))
    cut = int(cutoff / TIME_UNIT)
    t0 = time.perf_counter()
    old, old_nodes = rank_by_rank(p, cut)
    t1 = time.perf_counter()
    budget = Budget(1e9)
    new = branches(p, cut, budget)
    t2 = time.perf_counter()
    same = "same compositions" if sorted(t for _, t in new) == old else f"DIFFERENT: {old}"
    print(f"{ref} {layout} below {cutoff}: rank by rank {old_nodes} LPs {t1 - t0:.2f} s; boxes "
          f"{t2 - t1:.2f} s ({(t1 - t0) / max(t2 - t1, 1e-9):.1f}x), work {budget.used:.2f}; {len(new)} left, {same}")
    for b, t in new if solve_leaves else []:
        t3 = time.perf_counter()
        sol = solve(replace(p, totals=t), time_limit=120, cutoff=cut)
        print(f"  LP {b * TIME_UNIT:.4f} at {t}: master {sol.status} {sol.objective * TIME_UNIT:.4f} s/step "
              f"in {time.perf_counter() - t3:.1f} s")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--solve"]
    for case, layout, cutoff in ([(int(args[0]), args[1], float(args[2]))] if args else DEFAULTS):
        compare(case, layout, cutoff, "--solve" in sys.argv)
