"""One round of the master (`master.py`): CP-SAT's settings, its stopping gap and what the round is
charged (`budget.py`).

CP-SAT rather than a MIP solver: every round of a cold solve of Llama 3 70B tp4-pp4 v4 at (20,21,21,18)
(41 rounds) and GPT-3 175B tp4-pp8 v3 at (11,12,12,12,12,13,13,11) (21), re-solved with a 3 s cap
(`benchmarks/master_solvers.py`, 2026-12-05): CP-SAT 18.6 and 20.7 s, SCIP at least 119 and 62 s, HiGHS
at least 78 and 44 s (most of their rounds stopped at the cap). Both MIPs also called rounds INFEASIBLE
that CP-SAT solved (SCIP 2, HiGHS 3 of the 70B's 41), though each accepts CP-SAT's answer when its
variables are fixed there: floating point over rows in bytes (1e11) beside rows in time units."""
from __future__ import annotations

from ortools.sat.python import cp_model

from planner.search.budget import WORK_PER_CONSTRAINT, WORK_PER_DETERMINISTIC_S, Budget
from planner.search.partition import Solution

__all__ = ["run_round", "round_solver", "gap_limit", "target", "PRESOLVE", "MASTER_GAP", "GAP_SHARE"]


def round_solver(gap: float) -> cp_model.CpSolver:
    """CP-SAT as every master round runs it: one worker, fixed seed, no presolve (PRESOLVE), stopped
    within relative `gap` of its optimum (`benchmarks/master_solvers.py` replays rounds with it)."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = 0
    solver.parameters.cp_model_presolve = PRESOLVE
    solver.parameters.relative_gap_limit = gap
    return solver


def run_round(master, budget: Budget, gap: float) -> tuple[cp_model.CpSolver, int, list]:
    """One master solve within what is left of the budget (`round_solver`), stopped within relative
    `gap` of its optimum, and what it passed."""
    overhead = WORK_PER_CONSTRAINT * len(master.m.proto.constraints)
    solver = round_solver(gap)
    solver.parameters.max_deterministic_time = max(budget.left() - overhead, 1e-3) / WORK_PER_DETERMINISTIC_S
    solver.parameters.max_time_in_seconds = max(budget.wall_left(), 1e-3)
    seen = _Seen(master)
    status = solver.solve(master.m, seen)
    budget.spend(overhead + WORK_PER_DETERMINISTIC_S * solver.deterministic_time)
    return solver, status, seen.found[:-1]


PRESOLVE = False
"""CP-SAT's presolve is off: a master is small (hundreds of path rows over a few integers a chunk) and
solved again after every round, and its presolve was most of a round's wall. Every round of Llama 3 70B
tp4-pp4-dp8 v4 (8) and GPT-3 175B tp4-pp8-dp4 v3 (6) below the plan, replayed from their models
(2026-12-04): 6.0 -> 3.9 s and 13.0 -> 6.3 s (max_presolve_iterations 1: 5.4 and 7.9 s; probing off 5.3
and 8.9 s; linearization level 2, LP or fixed branching: slower). benchmarks/search.py at 60 s, before ->
after in the same session: Llama 3 70B OPTIMAL in 25.5 -> 19.3 s, GPT-3 175B 0.317 -> 0.314% (51.7 ->
41.6 s), the other plans and gaps the same; 175B's runner-up table gained three families."""


class _Seen(cp_model.CpSolverSolutionCallback):
    """Every assignment a round passes through on its way to its answer (the answer last)."""

    def __init__(self, master):
        super().__init__()
        self.master, self.found = master, []

    def on_solution_callback(self) -> None:
        self.found.append(self.master.values(self, self.master.p))  # values reads only p's lead and tail


MASTER_GAP = 0.005
"""A master round stops within this relative gap of its own optimum: its proposal is then not the
relaxation's best, but its bound still holds, and the loop ends only when the master is infeasible or
its bound reaches the incumbent, so the answer stays exact. Proving the last half percent of each round
was most of its time with one chunk per rank (GPT-3 13B tp2-pp16: 4.8 -> 2.7 s, same optimum)."""
GAP_SHARE = 0.5
"""A round's gap limit is at most this share of the gap left between the step to beat and the proved
bound. Once the incumbent is within MASTER_GAP of the bound, a round with that limit stops at its first
assignment below the incumbent, anywhere: GPT-3 175B tp4-pp8 v3 at the totals (11,12,12,12,12,13,13,11),
from its path floor's 585 paths, proposed 20 assignments in 17 s that simulated to 46.2-54.5 s/step
against master values of 46.08-46.13, never beating 46.13. Asked for the half nearer the bound, where the
paths are, it found 46.0998 (the optimum is 46.098) in 36 s. Searches at 60 s (2026-12-03): Llama 3 70B
gap 0.09 -> 0.02%; the others unchanged."""


def gap_limit(cutoff: int | None, best: Solution | None, bound: int) -> float:
    """The relative gap limit of the next round (`GAP_SHARE`)."""
    goal = target(cutoff, best)
    return MASTER_GAP if goal is None else min(MASTER_GAP, GAP_SHARE * max(0, goal - bound) / max(goal, 1))


def target(cutoff: int | None, best: Solution | None) -> int | None:
    """The step to beat: the cutoff or the incumbent, whichever is lower (None without either)."""
    return min((x for x in (cutoff, best and best.objective) if x is not None), default=None)
