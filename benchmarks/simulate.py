"""The schedule simulation, compiled orders (`schedule.program`) against the previous implementation, an
event loop over the ranks' orders kept below for comparison: per action timed, with and without the
longest paths the search's masters learn (`paths.critical`), and the one-off compilation, on the five
schedule shapes of benchmarks/search.py's plans (GPT-3 13B tp1-pp2 v3 with 16 micro-batches to GPT 1T
tp8-pp32 v4 with 256). Both give the same times to the bit and the same paths (checked here on every
shape; tests/unit/test_schedule.py and tests/solver/test_paths.py check them against the definition).

Measured 2026-12-04 on the 2-core machine (us an action, previous / compiled):
- times alone: 0.40-0.43 / 0.11-0.13, 3.2-3.7x;
- times and paths: 1.1-1.6 / 0.30-0.39, 3.4-5.2x (the most on GPT 1T's 65,536 actions);
- compiling an order, once per shape: 0.55-0.84 us an action.
In the 60 s searches of benchmarks/search.py, simulation and paths had taken 4.4 s of Llama 3 70B's
27.2 s and 14 s of GPT 1T's 36.6 s.

Run: python benchmarks/simulate.py
"""
from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from planner.cost.schedule import compile_orders, rank_orders  # noqa: E402
from planner.search.paths import critical  # noqa: E402

SHAPES = [("interleaved", 2, 3, 16), ("interleaved", 16, 3, 16), ("interleaved", 4, 3, 64),
          ("interleaved", 8, 2, 128), ("interleaved", 32, 4, 256)]


def previous_simulate(orders, fwd, bwd, send_fwd, send_bwd, events=None):
    """The event loop the compiled orders replaced: each rank runs its order while the inputs are there."""
    chunks, n = len(fwd), 1 + max(m for order in orders for _, _, m in order)
    f_end = [[-1.0] * n for _ in range(chunks)]
    b_end = [[-1.0] * n for _ in range(chunks)]
    free, ptr, remaining = [0.0] * len(orders), [0] * len(orders), sum(len(o) for o in orders)
    while remaining:
        for r, order in enumerate(orders):
            i, t = ptr[r], free[r]
            while i < len(order):
                c, kind, m = order[i]
                if kind == "F":
                    dep = 0.0 if not c else f_end[c - 1][m]
                    if dep < 0:
                        break
                    t = max(t, dep + (send_fwd[c - 1] if c else 0.0)) + fwd[c]
                    f_end[c][m] = t
                    d = fwd[c]
                else:
                    own, nxt = f_end[c][m], (f_end[c][m] if c == chunks - 1 else b_end[c + 1][m])
                    if own < 0 or nxt < 0:
                        break
                    t = max(t, max(own, nxt + (send_bwd[c + 1] if c < chunks - 1 else 0.0))) + bwd[c]
                    b_end[c][m] = t
                    d = bwd[c]
                if events is not None:
                    events.append((r, c, kind, m, t - d, t))
                i += 1
            remaining -= i - ptr[r]
            ptr[r], free[r] = i, t
    return free


def previous_critical(orders, events, send, chunks):
    """The walk back along tight edges the compiled one replaced, over dicts of the events."""
    at = {(c, k, m): s for _, c, k, m, s, _ in events}
    ends = {(c, k, m): e for _, c, k, m, _, e in events}
    prev = {b: a for order in orders for a, b in zip(order, order[1:])}
    out = []
    for order in orders:
        cur, counts = order[-1], Counter({(order[-1][1], order[-1][0]): 1})
        while at[cur] > 0:
            c, k, m = cur
            if k == "F":
                dep, hop = ((c - 1, "F", m), c - 1) if c else (None, None)
            else:
                dep, hop = ((c + 1, "B", m), c) if c < chunks - 1 else ((c, "F", m), None)
            if dep is not None and ends[dep] + (send[hop] if hop is not None else 0) == at[cur]:
                if hop is not None:
                    counts[("S", hop)] += 1
                cur = dep
            else:
                cur = prev[cur]
            counts[(cur[1], cur[0])] += 1
        out.append(counts)
    return out


def _timed(f, repeat: int) -> float:
    t = time.perf_counter()
    for _ in range(repeat):
        f()
    return (time.perf_counter() - t) / repeat


def main() -> None:
    rng = random.Random(0)
    print(f"{'shape':28s} {'actions':>8s} {'times: previous':>16s} {'compiled':>9s} {'ratio':>6s}"
          f" {'+paths: previous':>17s} {'compiled':>9s} {'ratio':>6s} {'compile':>8s}  (us an action)")
    for schedule, pp, vpp, n in SHAPES:
        orders = rank_orders(schedule, pp, vpp, n)
        k, acts = pp * vpp, sum(len(o) for o in orders)
        t = time.perf_counter()
        prog = compile_orders(orders)
        built = time.perf_counter() - t
        fwd = [rng.randint(800, 1200) for _ in range(k)]
        bwd = [2 * x + rng.randint(0, 50) for x in fwd]
        send = [rng.randint(0, 30) for _ in range(k - 1)] + [0]
        back = [0] + send[:-1]
        events: list = []
        old = previous_simulate(orders, fwd, bwd, send, back, events)
        end = prog.ends(fwd, bwd, send, back)
        assert old == [end[i] for i in prog.last], "the compiled orders time the step differently"
        assert previous_critical(orders, events, send, k) == list(critical(prog, end, fwd + bwd, send))
        repeat = max(3, 300_000 // acts)
        a = _timed(lambda: previous_simulate(orders, fwd, bwd, send, back), repeat)
        b = _timed(lambda: prog.ends(fwd, bwd, send, back), repeat)

        def old_paths():
            ev: list = []
            previous_simulate(orders, fwd, bwd, send, back, ev)
            previous_critical(orders, ev, send, k)
        c = _timed(old_paths, repeat)
        d = _timed(lambda: critical(prog, prog.ends(fwd, bwd, send, back), fwd + bwd, send), repeat)
        us = 1e6 / acts
        print(f"{f'{schedule} pp{pp} v{vpp} n{n}':28s} {acts:8d} {a * us:16.3f} {b * us:9.3f} {a / b:6.2f}"
              f" {c * us:17.3f} {d * us:9.3f} {c / d:6.2f} {built * us:8.3f}")


if __name__ == "__main__":
    main()
