"""Pipeline schedules as data: the order of forward and backward actions each rank runs, and a timing
simulation of that order.

The orders reproduce what torch 2.13's schedule classes execute (pinned by `tests/test_schedule.py`
against torch's own code): `ScheduleGPipe` runs every forward then every backward in micro-batch order;
`Schedule1F1B` runs `min(n, pp - rank)` warm-up forwards, then alternates one backward and one forward,
then the remaining backwards; `ScheduleInterleaved1F1B` follows `_get_1f1b_rank_ops` with
`number_of_rounds = max(1, n // pp)` (n must be a multiple of it) and chunk `c` on rank `c % pp`.
The cost model times these orders instead of using a textbook bubble formula, and reads the activations
each rank holds at once (forwards done, backwards not yet) off the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from planner.types.strategy import SCHEDULES, check_schedule as check

__all__ = ["SCHEDULES", "Action", "check", "rank_orders", "in_flight", "Timing", "simulate"]

Action = tuple[int, str, int]
"""(chunk index, "F" or "B", micro-batch)."""

def _gpipe(n: int, rank: int) -> list[Action]:
    return [(rank, "F", m) for m in range(n)] + [(rank, "B", m) for m in range(n)]


def _one_f_one_b(pp: int, n: int, rank: int) -> list[Action]:
    warm = min(n, pp - rank)
    ops: list[Action] = [(rank, "F", m) for m in range(warm)]
    f, b = warm, 0
    while b < n:
        ops.append((rank, "B", b))
        b += 1
        if f < n:
            ops.append((rank, "F", f))
            f += 1
    return ops


def _interleaved(pp: int, vpp: int, n: int, rank: int) -> list[Action]:
    """torch's `_get_1f1b_rank_ops` for ScheduleInterleaved1F1B, without its no-op padding."""
    per_round = n // max(1, n // pp)
    warm = min((vpp - 1) * per_round + 2 * (pp - 1 - rank), n * vpp)
    total = n * vpp
    fwd_count: dict[int, int] = {}
    bwd_count: dict[int, int] = {}

    def fwd(step: int) -> Action:
        c = ((step // per_round) % vpp) * pp + rank
        fwd_count[c] = fwd_count.get(c, 0) + 1
        return (c, "F", fwd_count[c] - 1)

    def bwd(step: int) -> Action:
        c = (vpp - 1 - ((step - warm) // per_round) % vpp) * pp + rank
        bwd_count[c] = bwd_count.get(c, 0) + 1
        return (c, "B", bwd_count[c] - 1)

    ops = [fwd(s) for s in range(warm)]
    for s in range(warm, total):
        ops += [fwd(s), bwd(s)]
    ops += [bwd(s) for s in range(total, total + warm)]
    return ops


def rank_orders(schedule: str, pp: int, vpp: int, n: int) -> list[list[Action]]:
    """Each pipeline rank's actions in the order torch runs them."""
    why = check(schedule, pp, vpp, n)
    if why:
        raise ValueError(why)
    if schedule == "gpipe":
        return [_gpipe(n, r) for r in range(pp)]
    if schedule == "1f1b":
        return [_one_f_one_b(pp, n, r) for r in range(pp)]
    return [_interleaved(pp, vpp, n, r) for r in range(pp)]


def in_flight(order: Sequence[Action], vpp: int, pp: int) -> list[tuple[int, ...]]:
    """The distinct maximal vectors (per local chunk) of micro-batches whose forward has run and whose
    backward has not, taken right after each forward: the moments a rank's saved activations peak.
    With one chunk per rank that is the single largest count; otherwise the vectors are filtered
    largest total first, so each is compared only with the maximal ones kept (an antichain, small)."""
    held = [0] * vpp
    if vpp == 1:
        most = 0
        for _, kind, _ in order:
            held[0] += 1 if kind == "F" else -1
            most = max(most, held[0])
        return [(most,)]
    seen: set[tuple[int, ...]] = set()
    for c, kind, _ in order:
        held[c // pp] += 1 if kind == "F" else -1
        if kind == "F":
            seen.add(tuple(held))
    kept: list[tuple[int, ...]] = []
    for v in sorted(seen, key=lambda v: (-sum(v), v)):
        if not any(all(a <= b for a, b in zip(v, w)) for w in kept):
            kept.append(v)
    return kept


@dataclass(frozen=True, slots=True)
class Timing:
    """The simulated step: when each rank finishes and how long it computed."""

    makespan: float
    finish: tuple[float, ...]
    """Per rank: when its last action ends."""
    busy: tuple[float, ...]
    """Per rank: seconds spent computing."""


def simulate(orders: list[list[Action]], fwd: Sequence[float], bwd: Sequence[float],
             send_fwd: Sequence[float] = (), send_bwd: Sequence[float] = (), events: list | None = None) -> Timing:
    """Run every rank's order with unlimited overlap of communication and compute: an action starts when
    its rank is free and its inputs have arrived. F(c, m) needs F(c-1, m) plus the send from chunk c-1
    (`send_fwd[c-1]`); B(c, m) needs F(c, m) and B(c+1, m) plus the send back (`send_bwd[c+1]`).
    `events`, if given, receives (rank, chunk, "F"/"B", micro-batch, start, end) of every action."""
    chunks = len(fwd)
    n = 1 + max(m for order in orders for _, _, m in order)
    send_fwd = list(send_fwd) or [0.0] * chunks
    send_bwd = list(send_bwd) or [0.0] * chunks
    nan = -1.0
    f_end = [[nan] * n for _ in range(chunks)]
    b_end = [[nan] * n for _ in range(chunks)]
    free = [0.0] * len(orders)
    busy = [0.0] * len(orders)
    ptr = [0] * len(orders)
    remaining = sum(len(o) for o in orders)
    last = chunks - 1
    while remaining:
        progressed = False
        for r, order in enumerate(orders):
            i, t = ptr[r], free[r]
            while i < len(order):
                c, kind, m = order[i]
                if kind == "F":
                    if c:
                        dep = f_end[c - 1][m]
                        if dep < 0:
                            break
                        dep += send_fwd[c - 1]
                    else:
                        dep = 0.0
                    t = max(t, dep) + fwd[c]
                    f_end[c][m] = t
                    busy[r] += fwd[c]
                    if events is not None:
                        events.append((r, c, "F", m, t - fwd[c], t))
                else:
                    own = f_end[c][m]
                    nxt = own if c == last else b_end[c + 1][m]
                    if own < 0 or nxt < 0:
                        break
                    dep = max(own, nxt + (send_bwd[c + 1] if c < last else 0.0))
                    t = max(t, dep) + bwd[c]
                    b_end[c][m] = t
                    busy[r] += bwd[c]
                    if events is not None:
                        events.append((r, c, "B", m, t - bwd[c], t))
                i += 1
            if i != ptr[r]:
                remaining -= i - ptr[r]
                ptr[r], free[r] = i, t
                progressed = True
        if not progressed:
            raise ValueError("schedule deadlocks: an action waits on one that never runs")
    return Timing(makespan=max(free), finish=tuple(free), busy=tuple(busy))
