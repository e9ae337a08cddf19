"""The master's paths against every path of the schedule's graph, enumerated: each rank's critical
path is a real path whose length its counts give, and the longest of all paths to the rank's last
action (the rank's simulated finish)."""
import random
from collections import Counter

import pytest

from planner.cost.schedule import compile_orders, rank_orders, simulate
from planner.search.paths import critical


def _graph(orders, fwd, bwd, send):
    """Successors with the edge's send: the rank's next action; F(c) -> F(c+1) over send[c];
    B(c) -> B(c-1) over send[c-1]."""
    chunks, succ = len(fwd), {}
    for order in orders:
        for i, a in enumerate(order):
            out = [(order[i + 1], 0, None)] if i + 1 < len(order) else []
            c, k, m = a
            if k == "F" and c < chunks - 1:
                out.append(((c + 1, "F", m), send[c], c))
            if k == "B" and c > 0:
                out.append(((c - 1, "B", m), send[c - 1], c - 1))
            succ[a] = out
    return succ


def _all_paths(succ, sources):
    """Every path that starts at a source (an action at time 0), to any action: (actions, sends)."""
    out, stack = [], [((a,), ()) for a in sources]
    while stack:
        acts, hops = stack.pop()
        out.append((acts, hops))
        stack += [(acts + (b,), hops + ((hop,) if hop is not None else ())) for b, _, hop in succ[acts[-1]]]
    return out


def _length(counts, fwd, bwd, send):
    val = {"F": fwd, "B": bwd, "S": send}
    return sum(n * val[k][c] for (k, c), n in counts.items())


def _counts(acts, hops):
    counts = Counter((a[1], a[0]) for a in acts)
    counts.update(("S", h) for h in hops)
    return counts


CASES = [("gpipe", 2, 1, 3), ("gpipe", 3, 1, 2), ("1f1b", 2, 1, 3), ("1f1b", 3, 1, 4),
         ("interleaved", 2, 2, 2), ("interleaved", 2, 2, 4), ("interleaved", 3, 2, 3), ("interleaved", 2, 3, 2)]


@pytest.mark.parametrize("schedule,pp,vpp,n", CASES)
def test_critical_paths_are_the_longest_to_each_ranks_end(schedule, pp, vpp, n):
    rng = random.Random(hash((schedule, pp, vpp, n)) % 1000)
    orders = rank_orders(schedule, pp, vpp, n)
    chunks = pp * vpp
    for _ in range(15):
        fwd = [rng.randint(1, 9) for _ in range(chunks)]
        bwd = [rng.randint(1, 18) for _ in range(chunks)]
        send = [rng.randint(0, 3) for _ in range(chunks - 1)] + [0]
        events = []
        t = simulate(orders, fwd, bwd, send, [0] + send[:-1], events)
        t_end = compile_orders(orders).ends(fwd, bwd, send, [0] + send[:-1])
        succ = _graph(orders, fwd, bwd, send)
        every = _all_paths(succ, [o[0] for o in orders])
        for r, counts in enumerate(critical(compile_orders(orders), t_end, fwd + bwd, send)):
            assert _length(counts, fwd, bwd, send) == t.finish[r]
            assert any(_counts(a, h) == counts and a[-1] == orders[r][-1] for a, h in every)
            assert max(_length(_counts(a, h), fwd, bwd, send) for a, h in every if a[-1] == orders[r][-1]) == t.finish[r]
