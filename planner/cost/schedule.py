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

from array import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from planner.types.strategy import SCHEDULES, check_schedule as check

__all__ = ["SCHEDULES", "Action", "check", "rank_orders", "in_flight", "Timing", "Program", "compile_orders",
           "as_program", "program", "flights", "simulate"]

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


@dataclass(frozen=True, eq=False)
class Program:
    """Every rank's order compiled once for timing: its actions as steps, in one order that runs each
    after what it waits on. Timing an assignment is then one pass over flat arrays, 3.2-3.7x faster than
    walking the orders (benchmarks/simulate.py; the search times the same orders thousands of times: GPT
    1T on 8x384, 20M actions in a 60 s search), in 40 bytes a step. Reads as the orders: iterating it
    yields each rank's order. Step i waits on `wait[0][i]` (its rank's previous step), `wait[1][i]` (its
    own forward, for a backward) and `wait[2][i]` plus the send `wait[3][i]` (its input), and lasts
    `wait[4][i]`: indices into `ends`' lists, where step `len` (the sentinel) ends at 0 and send
    2 x chunks is 0."""

    orders: tuple[tuple[Action, ...], ...]
    chunks: int
    wait: tuple[array, array, array, array, array]
    rank: array
    micro_batch: array
    prev: array
    """Per step: its rank's step before it, -1 for a rank's first."""
    back: tuple[array, array]
    """Per step: the step whose output it waits on (F(c-1, m) for F(c, m); B(c+1, m), or F(c, m) in the
    last chunk, for B(c, m); -1 for F(0, m)) and the chunk whose send carries it (-1: none)."""
    last: tuple[int, ...]
    """Per rank: the step of its last action."""

    def __iter__(self):
        return iter(self.orders)

    def __len__(self) -> int:
        return len(self.orders)

    def __getitem__(self, r: int) -> tuple[Action, ...]:
        return self.orders[r]

    def action(self, i: int) -> tuple[str, int]:
        """Step i's kind and chunk."""
        u = self.wait[4][i]
        return ("F", u) if u < self.chunks else ("B", u - self.chunks)

    def ends(self, fwd: Sequence[float], bwd: Sequence[float], send_fwd: Sequence[float] = (),
             send_bwd: Sequence[float] = ()) -> list[float]:
        """When each step ends (by step; one more entry, the sentinel 0.0): `simulate`'s times."""
        k = self.chunks
        dur = [*fwd, *bwd]
        sends = [*_padded(send_fwd, k), *_padded(send_bwd, k), 0.0]
        end = [0.0] * (len(self.rank) + 1)
        i = 0
        for p, a, b, s, u in zip(*self.wait):
            t = end[p]
            x = end[a]
            if x > t:
                t = x
            x = end[b] + sends[s]
            if x > t:
                t = x
            end[i] = t + dur[u]
            i += 1
        return end


def compile_orders(orders: Sequence[Sequence[Action]]) -> Program:
    """`orders` as a `Program`: the steps in the order a round-robin over the ranks first finds each
    action runnable (its rank's previous action and its inputs placed)."""
    chunks = 1 + max(c for order in orders for c, _, _ in order)
    n = 1 + max(m for order in orders for _, _, m in order)
    total = sum(len(o) for o in orders)
    none, zero, last = total, 2 * chunks, chunks - 1
    at = [none] * (2 * chunks * n)  # the step of F(c, m) at c n + m, of B(c, m) at (chunks + c) n + m
    cols: list[list[int]] = [[] for _ in range(10)]
    wp, wa, wb, ws, wu, bd, bh, rk, mb, pv = cols
    ptr, tail, placed = [0] * len(orders), [-1] * len(orders), 0
    while placed < total:
        before = placed
        for r, order in enumerate(orders):
            i = ptr[r]
            while i < len(order):
                c, kind, m = order[i]
                if kind == "F":
                    dep = at[(c - 1) * n + m] if c else none
                    if c and dep == none:
                        break
                    wa.append(none)
                    wb.append(dep)
                    ws.append(c - 1 if c else zero)
                    wu.append(c)
                    bd.append(dep if c else -1)
                    bh.append(c - 1 if c else -1)
                    at[c * n + m] = placed
                else:
                    own = at[c * n + m]
                    nxt = at[(chunks + c + 1) * n + m] if c < last else none
                    if own == none or (c < last and nxt == none):
                        break
                    wa.append(own)
                    wb.append(nxt)
                    ws.append(chunks + c + 1 if c < last else zero)
                    wu.append(chunks + c)
                    bd.append(nxt if c < last else own)
                    bh.append(c if c < last else -1)
                    at[(chunks + c) * n + m] = placed
                wp.append(none if tail[r] < 0 else tail[r])
                pv.append(tail[r])
                rk.append(r)
                mb.append(m)
                tail[r] = placed
                placed += 1
                i += 1
            ptr[r] = i
        if placed == before:
            raise ValueError("schedule deadlocks: an action waits on one that never runs")
    wp, wa, wb, ws, wu, bd, bh, rk, mb, pv = (array("i", col) for col in cols)
    return Program(tuple(tuple(o) for o in orders), chunks, (wp, wa, wb, ws, wu), rk, mb, pv, (bd, bh), tuple(tail))


def _padded(sends: Sequence[float], k: int) -> list[float]:
    """Per chunk (zeros past those given): the layout `Program.ends` indexes."""
    return [*sends, *[0.0] * (k - len(sends))]


def as_program(orders: Sequence[Sequence[Action]] | Program) -> Program:
    """`orders` compiled, unless they are already."""
    return orders if isinstance(orders, Program) else compile_orders(orders)


@lru_cache(maxsize=32)
def program(schedule: str, pp: int, vpp: int, n: int) -> Program:
    """`rank_orders` compiled, once per schedule shape (a pure function of it)."""
    return compile_orders(rank_orders(schedule, pp, vpp, n))


@lru_cache(maxsize=4096)
def flights(schedule: str, pp: int, vpp: int, n: int) -> tuple[list[tuple[int, ...]], ...]:
    """Per rank, `in_flight` of its order, once per schedule shape (read-only: shared by every caller,
    the cost model's floors and the partition problems alike). From the plain orders: the floors ask
    thousands of shapes that are never timed, and compiling them would evict the ones that are."""
    return tuple(in_flight(o, vpp, pp) for o in rank_orders(schedule, pp, vpp, n))


def simulate(orders: Sequence[Sequence[Action]] | Program, fwd: Sequence[float], bwd: Sequence[float],
             send_fwd: Sequence[float] = (), send_bwd: Sequence[float] = (), events: list | None = None) -> Timing:
    """Run every rank's order with unlimited overlap of communication and compute: an action starts when
    its rank is free and its inputs have arrived. F(c, m) needs F(c-1, m) plus the send from chunk c-1
    (`send_fwd[c-1]`); B(c, m) needs F(c, m) and B(c+1, m) plus the send back (`send_bwd[c+1]`).
    `events`, if given, receives (rank, chunk, "F"/"B", micro-batch, start, end) of every action."""
    prog = as_program(orders)
    end = prog.ends(fwd, bwd, send_fwd, send_bwd)
    dur = [*fwd, *bwd]
    k = prog.chunks
    busy = tuple(sum([dur[c if kind == "F" else k + c] for c, kind, _ in order], 0.0) for order in prog.orders)
    if events is not None:
        for i, (r, m, u, t) in enumerate(zip(prog.rank, prog.micro_batch, prog.wait[4], end)):
            events.append((r, *prog.action(i)[::-1], m, t - dur[u], t))
    finish = tuple(end[i] if i >= 0 else 0.0 for i in prog.last)
    return Timing(makespan=max(finish), finish=finish, busy=busy)
