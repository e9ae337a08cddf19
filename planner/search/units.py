"""The master's coarse time unit (`master.py`), and a problem's times rounded down to it."""
from __future__ import annotations

import math
from dataclasses import replace

from planner.search.partition import Problem

__all__ = ["unit_of", "coarse", "UNIT_SHARE"]

UNIT_SHARE = 1e-6
"""The master's time unit: the power of ten nearest below this share of a rank's average work."""


def unit_of(p: Problem) -> int:
    """Problem time units per master unit. CP-SAT proves a master optimum over an objective some 1e10
    units wide far more slowly than over one 1e7 wide (GPT-3 175B tp4-pp8-dp4 interleaved v2 on 8x16,
    the first master: unproved after 60 s at 10 ns, 0.8 s at 10 us); 1 for small problems."""
    work = p.micro_batches * (sum(p.fwd) + sum(b[0] for b in p.bwd)) / p.pp
    return 10 ** max(0, int(math.floor(math.log10(max(work * UNIT_SHARE, 1)))))


def coarse(p: Problem, unit: int) -> Problem:
    """`p` with every time rounded down to `unit`s (memory untouched): every path's sum and every end
    term stays at most its true value (the master rounds subtracted times up itself, `master._Master._rank_extra`)."""
    if unit == 1:
        return p

    def d(x) -> int:
        return int(x) // unit
    return replace(p, fwd=tuple(map(d, p.fwd)), bwd=tuple(tuple(map(d, b)) for b in p.bwd),
                   send=tuple(tuple(map(d, s)) for s in p.send), opt=tuple(map(d, p.opt)),
                   sync=tuple(map(d, p.sync)), gather=tuple(map(d, p.gather)),
                   dp=replace(p.dp, fixed=d(p.dp.fixed), bucket=d(p.dp.bucket)))
