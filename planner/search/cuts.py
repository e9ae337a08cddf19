"""Path cuts for an LP of the master: Kelley's cutting planes on the simulated step.

The step is the longest path through the schedule plus its rank's end terms: a maximum of forms linear
in the chunk times, so convex in them, and the LP over every path is the tightest LP of the master. The
seed paths (`paths.seed_paths`) are a few of those. At an LP optimum the schedule is simulated with the
LP's fractional chunk times (scaled to integers: every path is a valid row whatever the times, so the
rounding only decides which path is found); each rank whose longest path there, with its end terms,
exceeds the LP's T gives a row the LP lacks (`separate`). `relax.Kelley` simulates first at a point
between the LP's optimum and its earlier ones (in-out, `relax.IN_OUT`), keeping the paths found there that
the optimum violates.

Measured (2026-12-03, GLOP, rows added until none is violated): GPT-3 175B tp4-pp8 v3 at the totals
(11,12,12,12,12,13,13,11): 45.63 -> 45.87 s/step, where its optimum is 46.098; Llama 3 70B tp4-pp4 v3:
79.45 -> 80.17 over the whole candidate, its four compositions below 81.97 from 81.03-81.12 to
81.54-81.82; Llama 3 405B tp8-pp16 v3: 6.76 -> 6.95 after 60 rounds.
"""
from __future__ import annotations

from collections import Counter

from planner.cost.schedule import Action, Program, as_program
from planner.search.paths import critical, key

__all__ = ["Probe", "separate", "length", "SCALE"]

SCALE = 1000
"""The LP's chunk times (master units) are simulated as integers in 1/SCALE units."""
TOLERANCE = 1e-6
"""A path is a cut when it exceeds the LP's T by more than this share (and one unit): GLOP's own slack."""


class Probe:
    """A master's chunk times and rank end terms as columns of its LP: one variable equal to each
    expression, so that an LP point can be simulated. Only for an LP: CP-SAT never sees these."""

    def __init__(self, master):
        m = master.m
        hi = 2 * max(list(m.proto.variables[master.T.index].domain)[-1], 1)  # this repeated field has no [-1]

        def column(expr) -> int:
            v = m.new_int_var(-hi, hi, "")
            m.add(v == expr)
            return v.index
        q = master.x.q
        self.fwd = [column(e) for e in q["fwd"]]
        self.bwd = [column(e) for e in q["bwd"]]
        self.send = [column(e) for e in q["send"]]
        self.extra = [column(e) for e in master.extra]
        self.T = master.T.index

    def columns(self) -> list[int]:
        return [*self.fwd, *self.bwd, *self.send, *self.extra, self.T]


def separate(probe: Probe, orders: list[list[Action]] | Program, values, known: dict,
             at: dict | None = None) -> list[tuple[int, Counter]]:
    """The paths (rank, counts), not in `known`, that the LP point `values` (per column, master units)
    violates: each rank's longest path at the chunk times of `at` (by default `values` itself), where
    its length at `values`, with the rank's end terms, exceeds the point's T."""
    at = values if at is None else at

    def scaled(cols) -> list[int]:
        return [round(at[i] * SCALE) for i in cols]
    fwd, bwd, send = scaled(probe.fwd), scaled(probe.bwd), scaled(probe.send)
    prog = as_program(orders)
    end = prog.ends(fwd, bwd, send, [0] + send[:-1])
    T = values[probe.T]
    out = []
    for r, counts in enumerate(critical(prog, end, fwd + bwd, send)):
        if length(probe, r, counts, values) > T * (1 + TOLERANCE) + 1 and key(r, counts) not in known:
            out.append((r, counts))
    return out


def length(probe: Probe, r: int, counts: Counter, values) -> float:
    """Rank r's path `counts` at the point `values` (per column): its chunk times and sends, and the
    rank's end terms."""
    cols = {"F": probe.fwd, "B": probe.bwd, "S": probe.send}
    return sum(n * values[cols[k][c]] for (k, c), n in counts.items()) + values[probe.extra[r]]
