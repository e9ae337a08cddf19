"""Why the partition master is CP-SAT: every round of two hard master solves, re-solved by CP-SAT with
the search's settings (`rounds.run_round`) and by the MIP solvers OR-Tools ships (SCIP, HiGHS) on the
same rows, the same relative gap and a time cap (5 s a round unless given). Run: python benchmarks/master_solvers.py [cap_s].

The instances are the compositions the 60 s searches of benchmarks/search.py spend their proofs on:
Llama 3 70B tp4-pp4-dp8 interleaved v4 at the rank totals (20,21,21,18), told to beat 81.8024 s/step
(the plan), and GPT-3 175B tp4-pp8-dp4 interleaved v3 at (11,12,12,12,12,13,13,11), told to beat
46.1415. The master's no-goods (rows with holes in their domains, or enforced by literals) become
binaries and big-M rows (`as_mip`). Where a MIP says INFEASIBLE and CP-SAT found an assignment (which
the search simulates: it is real), the MIP is solved again with the model's variables fixed at CP-SAT's
answer: "takes" means the conversion admits it, so the INFEASIBLE was the MIP's numerics (rows in bytes,
1e11, beside rows in time units), not the conversion."""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from ortools.linear_solver import pywraplp
from ortools.sat.python import cp_model

from planner.search import master
from planner.search.budget import Budget
from planner.search.pricing import TIME_UNIT, problem
from planner.search.rounds import round_solver
from planner.search.space import parse_layout

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import model  # noqa: E402  (benchmarks/search.py: cached profiles)

CASES = (("examples/llama.py:llama3_70b", "8x16", 512, "tp4-pp4-dp8-mbs1-interleaved-v4-zero2-sp", (20, 21, 21, 18), 81.8024),
         ("examples/gpt.py:gpt3_175b", "8x16", 512, "tp4-pp8-dp4-mbs1-interleaved-v3-zero2-sp",
          (11, 12, 12, 12, 12, 13, 13, 11), 46.1415))
BIG = 2 ** 62


def rounds_of(ref: str, gpus: str, batch: int, layout: str, totals: tuple, cut_s: float, work: float) -> list:
    """The master models of every round of one solve (a copy each, with its gap), in order."""
    cm = model(ref, gpus)
    s = parse_layout(layout, cm.profile, cm.world, batch)
    p = replace(problem(cm, s), totals=totals)
    seen, run = [], master.run_round

    def capture(m, budget, gap):
        seen.append((m.m.clone(), gap))
        return run(m, budget, gap)

    master.run_round = capture
    try:
        master.solve(p, cutoff=int(cut_s / TIME_UNIT), budget=Budget(work))
    finally:
        master.run_round = run
    return seen


def cp_sat(m: cp_model.CpModel, gap: float, cap: float) -> tuple[float, str, list[int] | None]:
    solver = round_solver(gap)
    solver.parameters.max_time_in_seconds = cap
    t = time.perf_counter()
    status = solver.solve(m)
    wall = time.perf_counter() - t
    point = [solver.value(m.get_int_var_from_proto_index(i)) for i in range(len(m.proto.variables))] \
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE) else None
    return wall, solver.status_name(status), point


def as_mip(m: cp_model.CpModel, name: str):
    """The model in a pywraplp MIP: plain rows as they are; a row with holes in its domain, or enforced by
    literals, by one binary per interval of its domain and big-M terms from its activity's exact range
    (`exclude`'s no-goods); a bool_or as a sum of literals. None for any other kind of constraint."""
    proto = m.proto
    if any(len(list(v.domain)) != 2 for v in proto.variables):
        return None
    solver = pywraplp.Solver.CreateSolver(name)
    inf = solver.infinity()
    x = [solver.IntVar(*list(v.domain), "") for v in proto.variables]
    dom = [list(v.domain) for v in proto.variables]

    def lit(ref):  # a literal as (coefficient, variable, constant): x or 1 - x
        return (1, x[ref], 0) if ref >= 0 else (-1, x[-ref - 1], 1)

    for c in proto.constraints:
        if c.has_bool_or():
            ors = [lit(r) for r in c.bool_or.literals]
            row = solver.Constraint(1 - sum(k0 for _, _, k0 in ors), inf)
            for k, var, _ in ors:
                row.SetCoefficient(var, k)
            continue
        if not c.has_linear():
            return None
        terms, shift = [], 0
        for v, a in zip(c.linear.vars, c.linear.coeffs):
            k, var, k0 = lit(v)
            terms.append((a * k, var, v if v >= 0 else -v - 1))
            shift += a * k0
        low = shift + sum(min(a * dom[i][0], a * dom[i][1]) for a, _, i in terms)
        high = shift + sum(max(a * dom[i][0], a * dom[i][1]) for a, _, i in terms)
        d, lits = list(c.linear.domain), [lit(r) for r in c.enforcement_literal]
        spans = [(max(lo, low), min(hi, high)) for lo, hi in zip(d[::2], d[1::2])]
        if len(spans) == 1 and not lits:
            lo, hi = spans[0]
            row = solver.Constraint(-inf if lo <= low else lo - shift, inf if hi >= high else hi - shift)
            for a, var, _ in terms:
                row.SetCoefficient(var, a)
            continue
        z = [solver.BoolVar("") for _ in spans]
        pick = solver.Constraint(-inf, 1)  # at most one interval; at least one when every literal holds
        need = solver.Constraint(1 - len(lits) + sum(k0 for _, _, k0 in lits), inf)
        for v in z:
            pick.SetCoefficient(v, 1)
            need.SetCoefficient(v, 1)
        for k, var, _ in lits:
            need.SetCoefficient(var, -k)
        for v, (lo, hi) in zip(z, spans):  # sum >= lo - (lo - low)(1 - z), sum <= hi + (high - hi)(1 - z)
            above = solver.Constraint(lo - shift - (lo - low), inf)
            below = solver.Constraint(-inf, hi - shift + (high - hi))
            above.SetCoefficient(v, -(lo - low))
            below.SetCoefficient(v, high - hi)
            for a, var, _ in terms:
                above.SetCoefficient(var, a)
                below.SetCoefficient(var, a)
    goal = solver.Objective()
    for v, a in zip(proto.objective.vars, proto.objective.coeffs):
        goal.SetCoefficient(x[v], a)
    goal.SetMinimization()
    return solver


MIP_STATUS = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.FEASIBLE: "FEASIBLE",
              pywraplp.Solver.INFEASIBLE: "INFEASIBLE", pywraplp.Solver.NOT_SOLVED: "NOT_SOLVED"}


def mip(m: cp_model.CpModel, name: str, gap: float, cap: float, point: list[int] | None = None) -> tuple[float, str] | None:
    """The MIP's wall and status; with `point`, the model's own variables fixed there (its no-goods'
    binaries left free): whether the MIP takes CP-SAT's answer at all."""
    solver = as_mip(m, name)
    if solver is None:
        return None
    for x, v in zip(solver.variables(), point or ()):
        x.SetBounds(v, v)
    solver.SetTimeLimit(int(cap * 1000))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, max(gap, 1e-9))
    t = time.perf_counter()
    status = solver.Solve(params)
    return time.perf_counter() - t, MIP_STATUS.get(status, "NO_ANSWER")  # HiGHS stopped by the cap: 99


def main(cap: float) -> None:
    for ref, gpus, batch, layout, totals, cut_s, in CASES:
        models = rounds_of(ref, gpus, batch, layout, totals, cut_s, work=30.0)
        total = {"CP-SAT": 0.0, "SCIP": 0.0, "HIGHS": 0.0}
        shared, apart = 0, 0
        print(f"{ref} {layout} at {totals}, below {cut_s} s/step: {len(models)} rounds", flush=True)
        for k, (m, gap) in enumerate(models):
            wall, status, point = cp_sat(m, gap, cap)
            others = {name: mip(m, name, gap, cap) for name in ("SCIP", "HIGHS")}
            if any(v is None for v in others.values()):
                apart += 1
                print(f"  round {k}: CP-SAT {wall:.2f} s {status} (a constraint no MIP here takes: CP-SAT only)", flush=True)
                continue
            shared += 1
            total["CP-SAT"] += wall
            for name, (w, _) in others.items():
                total[name] += w
            wrong = [f"{name} ({'takes' if mip(m, name, gap, cap, point)[1] in ('OPTIMAL', 'FEASIBLE') else 'refuses'} CP-SAT's answer)"
                     for name, (_, st) in others.items() if st == "INFEASIBLE" and point is not None]
            print(f"  round {k}: CP-SAT {wall:.2f} s {status}; " +
                  "; ".join(f"{name} {w:.2f} s {st}" for name, (w, st) in others.items()) +
                  (f"  <- wrongly INFEASIBLE: {', '.join(wrong)}" if wrong else ""), flush=True)
        if shared:
            print(f"  {shared} rounds given to all three ({apart} to CP-SAT only): CP-SAT {total['CP-SAT']:.2f} s, "
                  f"SCIP {total['SCIP']:.2f} s ({total['SCIP'] / total['CP-SAT']:.1f}x), "
                  f"HiGHS {total['HIGHS']:.2f} s ({total['HIGHS'] / total['CP-SAT']:.1f}x); a MIP stopped at the "
                  f"cap ({cap:g} s) counts the cap, so its ratio is a floor", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
