"""One strategy priced: its stage-partition instance in the solver's integer units, solved exactly
(`totals.solve`, `master.solve`) or, for a strategy with its own bounds and recompute, estimated as given."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.cost.model import CostModel, even_split
from planner.cost.terms import dp_compute
from planner.search.bounds import lower_bound
from planner.search.budget import WORK_PER_ACTION, Budget
from planner.search.floor import rank_caps
from planner.search.seeding import seed
from planner.search.local import AFFORD, improve
from planner.search.master import Warm
from planner.search.partition import Problem, Solution, evaluate
from planner.search.paths import pool, seed_paths
from planner.search.relax import lp_floor
from planner.search.totals import solve
from planner.types.estimate import Estimate
from planner.types.strategy import Strategy, parse_recompute, recompute_name

__all__ = ["even_start", "Candidate", "TIME_UNIT", "problem", "evaluate_fixed", "seeded", "lp_bound", "polished", "assigned"]

TIME_UNIT = 1e-8
"""Solver time unit (10 ns): integer costs keep CP-SAT exact; memory is in bytes."""


@dataclass(frozen=True)
class Candidate:
    """A strategy with its estimate (or why it fails)."""

    strategy: Strategy
    estimate: Estimate | None
    lower_bound: float
    solver_status: str = ""
    gap: float = 0.0
    why_not: str = ""


def problem(cm: CostModel, s: Strategy, recompute: str | None = None, bounds: tuple[int, ...] = ()) -> Problem:
    """The partition instance of `s` in integer units: the cost model's own per-layer numbers."""
    costs, terms = cm.layer_costs(s), cm.terms(s)

    def t(x: float) -> int:
        return int(math.ceil(x / TIME_UNIT))
    fwd, bwd, act, transient = [], [], [], []
    for k, x in zip(cm.kinds, costs):
        fwd.append(t(x.fwd + x.tp_fwd))
        base = x.bwd + x.tp_bwd
        modes = ("none", "selective", "full") if k == "block" else ("none",) * 3
        bwd.append((t(base), t(base + x.elementwise), t(base + x.fwd + x.tp_fwd)) if k == "block" else (t(base),) * 3)
        act.append(tuple(x.act[m] for m in modes))
        transient.append(tuple(x.transient(m) for m in modes))
    send = ()
    if s.pp > 1:
        sizes = {x.out_bytes for x in costs}
        per_chunk = [{n: t(cm.send(s, c % s.pp, (c + 1) % s.pp, n)) for n in sizes} for c in range(s.chunks - 1)]
        send = tuple(tuple(per_chunk[c][x.out_bytes] for x in costs) for c in range(s.chunks - 1)) + ((0,) * len(costs),)
    dpm = cm.dp_model(s)
    dp = replace(dpm, fixed=t(dpm.fixed), bucket=t(dpm.bucket))
    cap = cm.usable - cm.reserve - dpm.buffer
    return Problem(fwd=tuple(fwd), bwd=tuple(bwd), act=tuple(act), transient=tuple(transient),
                   static=tuple(x.state for x in terms), out=tuple(x.out_bytes for x in costs),
                   is_block=tuple(k == "block" for k in cm.kinds), pp=s.pp, vpp=s.vpp,
                   micro_batches=s.num_micro_batches, schedule=s.schedule, cap=(int(cap),) * s.pp, send=send, dp=dp,
                   opt=tuple(t(x.opt + dp_compute(dpm, x.sync, x.gather, x.sync_copy, x.gather_copy)) for x in terms),
                   sync=tuple(t(x.sync) for x in terms),
                   gather=tuple(t(x.gather) for x in terms), comm_buffer=tuple(x.comm_buffer for x in terms),
                   recompute=recompute, fixed_bounds=bounds)


def lp_bound(cm: CostModel, s: Strategy) -> tuple[float, int]:
    """`s`'s LP floor in seconds (`relax.lp_floor`: every partition and recompute is at least this slow)
    and the LP's size in nonzeros; once per strategy."""
    def make() -> tuple[float, int]:
        units, size = lp_floor(problem(cm, s))
        return units * TIME_UNIT, size
    return cm.memo(("lp-floor", s), make)


def seeded(cm: CostModel, s: Strategy, lo: float, hi: float) -> Solution | None:
    """The discrete floor's seed plan (`seeding.seed`, no solver) as an assignment of `s`'s problem with
    its exact objective, to start a solve from; None when there is none or it does not fit."""
    p = problem(cm, s)
    plan = seed(cm, s, p, lo, hi)
    if plan is None:
        return None
    return _assignment(p, plan.layers_per_chunk, plan.recompute)


def _place(cm: CostModel, s: Strategy, recompute: str | None, limit: float, bounds: tuple[int, ...] = (),
           cutoff: float | None = None, tick=None, budget: Budget | None = None,
           warm: Warm | None = None) -> tuple[Strategy | None, str, float, float]:
    """Solve `s`'s stage bounds and recompute: (placed strategy or None, status, gap, proved bound in
    seconds). Status OPTIMAL / TIME_LIMIT with a strategy; NO_FIT, CUTOFF (nothing below `cutoff`
    seconds) or UNRESOLVED (limit hit before any assignment) without one."""
    p = problem(cm, s, recompute, bounds)
    if warm is None and not bounds and s.pp > 1:  # alone: from the even split (`even_start`)
        warm = Warm(best=even_start(cm, p, s, recompute))
        if budget is not None:  # up to three splits simulated (budget.py)
            budget.spend(3 * WORK_PER_ACTION * 2 * s.num_micro_batches * s.chunks)
    sol = solve(p, time_limit=limit, cutoff=None if cutoff is None else int(cutoff / TIME_UNIT), tick=tick,
                budget=budget, warm=warm, caps=lambda units: rank_caps(cm, s, units * TIME_UNIT * (1 + 1e-7) + TIME_UNIT))
    if sol is None:
        return None, "NO_FIT", 0.0, math.inf
    if not sol.bounds:
        return None, sol.status, 0.0, sol.objective * TIME_UNIT
    return assigned(p, s, sol), sol.status, sol.gap, sol.objective * TIME_UNIT


def even_start(cm: CostModel, p: Problem, s: Strategy, recompute: str | None) -> Solution | None:
    """The even split of the blocks (Megatron-LM's: the embedding on the first chunk, the head on the
    last) with `recompute` everywhere, else the least recompute mode that fits, as an assignment of `s`'s
    problem `p` to start a solve from; None when none fits. A solve cut short by its limit returns nothing
    slower than it: SC'21's 310.1B tp8-pp16 v2 (`benchmarks/fidelity.py`, 30 s) came back TIME_LIMIT at
    38.01 s/step where the even split runs 35.47."""
    bounds = tuple(even_split(cm.profile, s.chunks))
    modes = (recompute,) if recompute else ("none", "selective", "full")
    starts = (_assignment(p, bounds, (mode,) * s.chunks) for mode in modes)
    return next((sol for sol in starts if sol is not None), None)


def _assignment(p: Problem, layers: tuple[int, ...], names: tuple[str, ...]) -> Solution | None:
    """`layers` per chunk with recompute `names` as an assignment of `p`, with its exact objective; None
    when it does not fit."""
    full, sel = _modes(p, layers, names)
    score = evaluate(p, layers, full, sel)
    return Solution(tuple(layers), full, sel, score.objective, "HEURISTIC") if score.fits else None


def _modes(p: Problem, layers: tuple[int, ...], names: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per chunk of `p`, the (full, selective) block counts that recompute `names` mean."""
    modes = [parse_recompute(name, n) for name, n in zip(names, p.blocks_of(layers))]
    return tuple(m[0] for m in modes), tuple(m[1] for m in modes)


def assigned(p: Problem, s: Strategy, sol: Solution) -> Strategy:
    """`s` with the assignment `sol` of its problem `p`: layers per chunk and recompute names."""
    names = tuple(recompute_name(f, g, n) for f, g, n in zip(sol.full, sol.selective, p.blocks_of(sol.bounds)))
    return replace(s, layers_per_chunk=sol.bounds, recompute=names)


def polished(cm: CostModel, cand: Candidate, batch: int, budget: Budget) -> Candidate:
    """An interleaved plan after local search on its own layout (`local.improve`, within `budget`, from
    its seed paths): the search's ceiling comes from seed plans, and a candidate whose seed is the best
    plan may never be solved (Llama 3 405B on 8x2048: tp8-pp16-dp128 interleaved v3, a master's 11.55
    s/step taken to 7.875 in 5 s, where the search answered 7.907). The plan itself when no move helps."""
    s = cand.strategy
    if s.vpp == 1 or cand.estimate is None or not s.layers_per_chunk:
        return cand
    p = problem(cm, s)
    orders = p.orders()
    actions = sum(len(o) for o in orders)
    if budget.left() < (AFFORD + 2) * WORK_PER_ACTION * actions:
        return cand
    vectors = p.vectors()
    full, sel = _modes(p, s.layers_per_chunk, s.recompute)
    score = evaluate(p, s.layers_per_chunk, full, sel, orders, vectors)
    budget.spend(WORK_PER_ACTION * 2 * actions)  # orders, the plan simulated
    if not score.fits:
        return cand
    paths = pool(seed_paths(p.pp, p.vpp, p.micro_batches, orders, rounds=True))
    start = Solution(tuple(s.layers_per_chunk), full, sel, score.objective, "HEURISTIC")
    out, _ = improve(p, start, orders, vectors, paths, budget)
    if out.objective >= start.objective:
        return cand
    placed = assigned(p, s, out)
    return Candidate(placed, cm.estimate(placed, batch), cand.lower_bound, cand.solver_status)


def evaluate_fixed(cm: CostModel, s: Strategy, global_batch: int, recompute: str | None = None,
                   solve_bounds: bool = True, limit: float = 60.0, cutoff: float | None = None,
                   tick=None, budget: Budget | None = None, warm: Warm | None = None) -> Candidate:
    """Price one strategy: its own bounds and recompute if it has them, else the solver's (the best
    under the cost model's step time). With `cutoff`, a strategy that cannot beat it comes back
    without an estimate, status CUTOFF. `warm`: what an earlier solve of it learned (`master.Warm`);
    without one, the solve starts from the even split (`even_start`)."""
    lb = lower_bound(cm, s)
    if not solve_bounds:
        return Candidate(s, cm.estimate(s, global_batch), lb)
    placed, status, gap, bound = _place(cm, s, recompute, limit, s.layers_per_chunk, cutoff, tick, budget, warm)
    if placed is None:
        why = {"NO_FIT": "does not fit in memory with any recompute", "CUTOFF": "cannot beat the best plan",
               "UNRESOLVED": "not solved within the time limit"}[status]
        return Candidate(s, None, max(lb, bound) if status != "NO_FIT" else lb, status, why_not=why)
    return Candidate(placed, cm.estimate(placed, global_batch), lb, status, gap)
