"""Work budgets: the search's time limit counted in work, not read off the clock, so the same inputs
give the same plan however loaded the machine is.

A unit of work is about one second on the machine the constants were measured on (2026-12-01, the
project's 2-core CPU machine, `benchmarks/search_budget.py` style measurement of three partition solves:
GPT-3 13B tp2-pp16 and tp1-pp2-dp16 interleaved v3, 175B tp8-pp16): CP-SAT's own deterministic time
costs WORK_PER_DETERMINISTIC_S units a deterministic second (wall 17.4 s for 5.74 deterministic s over
25 rounds), each solver round WORK_PER_ROUND (model copy and presolve; 0.06 s a round), each schedule
action WORK_PER_ACTION (3 us) when a solve builds its action orders and again each time it simulates
them; outside the solves, each candidate's lower bound WORK_PER_BOUND (8.4 s for the 1T's 31,203
candidates) and each solved candidate's problem and estimate WORK_PER_CANDIDATE (11.6 s for 369). The
clock only caps a run that goes past WALL_CAP times its limit (a machine far slower than that one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time

__all__ = ["Budget", "WORK_PER_DETERMINISTIC_S", "WORK_PER_ROUND", "WORK_PER_ACTION", "WORK_PER_BOUND",
           "WORK_PER_CANDIDATE", "WALL_CAP"]

WORK_PER_DETERMINISTIC_S = 2.8
WORK_PER_ROUND = 0.06
WORK_PER_ACTION = 3e-6
WORK_PER_BOUND = 3e-4
WORK_PER_CANDIDATE = 0.03
WALL_CAP = 4.0


@dataclass
class Budget:
    """`limit` units of work, `used` so far; `wall_deadline` is the clock cap (perf_counter seconds)."""

    limit: float
    used: float = 0.0
    wall_deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.wall_deadline:
            self.wall_deadline = time.perf_counter() + WALL_CAP * max(self.limit, 0.05)

    def left(self) -> float:
        return self.limit - self.used

    def wall_left(self) -> float:
        return self.wall_deadline - time.perf_counter()

    def spent(self) -> bool:
        return self.left() <= 0 or self.wall_left() <= 0

    def spend(self, work: float) -> None:
        self.used += work

    def child(self, limit: float) -> "Budget":
        """A share of at most `limit` of what is left, under the same clock cap."""
        return Budget(min(limit, self.left()), wall_deadline=self.wall_deadline)
