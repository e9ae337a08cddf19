"""The stage-partition problem on plain integers, its exact objective, and brute force.

A chunk is a contiguous run of layers; its blocks run, in order, `full` under full recompute, then
`selective` under selective, the rest with none (which blocks of a chunk carry which mode changes
neither its time nor its memory, so this order loses nothing). Each chunk holds at least one block;
the prefix layers stay on the first chunk and the suffix layers on the last.

The objective is the cost model's step time, not a stand-in: the pipeline schedule simulated on its
real action order (`schedule.simulate`), then per rank its exposed data-parallel time and optimizer
step (`terms.dp_exposed`), the slowest rank setting the step. Memory is exact too (bytes, with the
allocator's share as an integer division). `evaluate` is the reference; `master.solve` finds its
minimum; `brute_force` enumerates every assignment for tests.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from planner.cost.schedule import Program, as_program, flights, program
from planner.cost.terms import ALLOCATOR_DIVISOR, DpModel, dp_exposed
from planner.search.paths import critical

__all__ = ["Problem", "Solution", "Part", "Score", "evaluate", "parts_of", "part", "rank_fits", "brute_force", "NONE", "SELECTIVE", "FULL"]

NONE, SELECTIVE, FULL = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A partition instance in integer units (time units, bytes). Per-layer tuples are indexed by layer."""

    fwd: tuple[int, ...]
    """Forward time (TP collectives included)."""
    bwd: tuple[tuple[int, int, int], ...]
    """Backward time under none / selective / full recompute (the recompute included)."""
    act: tuple[tuple[int, int, int], ...]
    """Activation bytes saved per micro-batch under each mode."""
    transient: tuple[tuple[int, int, int], ...]
    """Transient bytes in its backward under each mode."""
    static: tuple[int, ...]
    """Training-state bytes (weights, gradients, optimizer)."""
    out: tuple[int, ...]
    """Output bytes: a chunk ending here holds a receive buffer for it and for its gradient."""
    is_block: tuple[bool, ...]
    pp: int
    vpp: int = 1
    micro_batches: int = 1
    schedule: str = "1f1b"
    cap: tuple[int, ...] = ()
    """Per rank: bytes for everything the partition decides (capacity less the fixed reserve)."""
    send: tuple[tuple[int, ...], ...] = ()
    """Per chunk, per layer i: the send's time when the chunk ends after layer i."""
    dp: DpModel = DpModel("none", 1)
    opt: tuple[int, ...] = ()
    sync: tuple[int, ...] = ()
    gather: tuple[int, ...] = ()
    comm_buffer: tuple[int, ...] = ()
    recompute: str | None = None
    """None: the solver chooses; else every block runs this mode."""
    fixed_bounds: tuple[int, ...] = ()
    """Layers per chunk, when the user fixed them."""
    totals: tuple[int, ...] = ()
    """Blocks per pipeline rank, when a caller fixed them (a branch of `benchmarks/totals_search.py`)."""

    @property
    def chunks(self) -> int:
        return self.pp * self.vpp

    @property
    def layers(self) -> int:
        return len(self.fwd)

    @property
    def lead(self) -> int:
        return self.is_block.index(True) if True in self.is_block else self.layers

    @property
    def tail(self) -> int:
        return list(reversed(self.is_block)).index(True) if True in self.is_block else 0

    def per_layer(self, i: int) -> tuple:
        """Everything about layer i that a chunk's cost depends on (sends by chunk included)."""
        return (self.fwd[i], self.bwd[i], self.act[i], self.transient[i], self.static[i], self.out[i],
                tuple(s[i] for s in self.send), self.opt[i], self.sync[i], self.gather[i], self.comm_buffer[i])

    def uniform(self) -> bool:
        """All blocks cost the same in every respect (and there is at least one block: a model without
        repeated blocks is one chunk, which the general encoding covers)."""
        return len({self.per_layer(i) for i, b in enumerate(self.is_block) if b}) == 1

    def blocks_of(self, bounds) -> list[int]:
        """Blocks per chunk of an assignment's layers per chunk."""
        starts = list(itertools.accumulate(bounds, initial=0))
        return [sum(self.is_block[a:e]) for a, e in zip(starts, starts[1:])]

    def orders(self) -> Program:
        return program(self.schedule, self.pp, self.vpp, self.micro_batches)

    def vectors(self) -> tuple[list[tuple[int, ...]], ...]:
        """Per rank, its maximal in-flight vectors (`schedule.flights`)."""
        return flights(self.schedule, self.pp, self.vpp, self.micro_batches)


@dataclass(frozen=True)
class Solution:
    bounds: tuple[int, ...]
    """Layers per chunk."""
    full: tuple[int, ...]
    """Per chunk: blocks under full recompute (its first ones)."""
    selective: tuple[int, ...]
    """Per chunk: blocks under selective recompute (the next ones)."""
    objective: int
    status: str = "OPTIMAL"
    gap: float = 0.0
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Part:
    """One chunk under one assignment."""

    fwd: int
    bwd: int
    act: int
    transient: int
    static: int
    send: int
    buffer: int
    opt: int
    sync: int
    gather: int
    comm_buffer: int
    first: int
    """Its first layer's gather + reduce-scatter."""


def parts_of(p: Problem, bounds, full, sel) -> list[Part]:
    starts = list(itertools.accumulate(bounds, initial=0))
    return [part(p, starts, c, full[c], sel[c]) for c in range(p.chunks)]


def part(p: Problem, starts: list[int], c: int, full: int, sel: int) -> Part:
    """Chunk c (layers starts[c]..starts[c+1]-1) with its first `full` blocks under full recompute and
    the next `sel` under selective: one chunk alone, for callers that vary one rank's recompute."""
    a, e = starts[c], starts[c + 1]
    modes, n = [], 0
    for i in range(a, e):
        mode = NONE
        if p.is_block[i]:
            mode = FULL if n < full else SELECTIVE if n < full + sel else NONE
            n += 1
        modes.append(mode)
    rng = range(a, e)
    return Part(
        fwd=sum(p.fwd[i] for i in rng), bwd=sum(p.bwd[i][m] for i, m in zip(rng, modes)),
        act=sum(p.act[i][m] for i, m in zip(rng, modes)),
        transient=max(p.transient[i][m] for i, m in zip(rng, modes)), static=sum(p.static[i] for i in rng),
        send=p.send[c][e - 1] if p.send and c < p.chunks - 1 else 0,
        buffer=2 * p.out[e - 1] if p.pp > 1 else 0, opt=sum(p.opt[i] for i in rng),
        sync=sum(p.sync[i] for i in rng), gather=sum(p.gather[i] for i in rng),
        comm_buffer=max(p.comm_buffer[i] for i in rng), first=p.sync[a] + p.gather[a])


@dataclass(frozen=True)
class Score:
    objective: int
    fits: bool
    ends: tuple[int, ...]
    """Per rank: its end of step."""
    paths: tuple[Counter, ...] = ()
    """Per rank: a longest path to its last action, as counts of ('F' | 'B' | 'S', chunk)."""


def rank_extra(p: Problem, parts: list[Part], r: int) -> int:
    """Rank r's optimizer step and exposed data-parallel time."""
    mine = [parts[c] for c in range(r, p.chunks, p.pp)]
    dp = dp_exposed(p.dp, sum(x.sync for x in mine), sum(x.gather for x in mine), mine[0].first,
                    sum(x.fwd for x in mine), sum(x.bwd for x in mine), mine[0].bwd)
    return sum(x.opt for x in mine) + dp


def fits(p: Problem, parts: list[Part], vectors) -> bool:
    return all(rank_fits(p, parts, vectors, r) for r in range(p.pp))


def rank_fits(p: Problem, parts: list[Part], vectors, r: int) -> bool:
    """Pipeline rank r's peak (state, buffers, activations at its worst in-flight vector, transient and
    the allocator's share) within its cap."""
    mine = [parts[c] for c in range(r, p.chunks, p.pp)]
    act = max(sum(n * x.act for n, x in zip(v, mine)) for v in vectors[r])
    tr = max(x.transient for x in mine)
    used = sum(x.static + x.buffer for x in mine) + max(x.comm_buffer for x in mine) + act + tr
    return used + (act + tr) // ALLOCATOR_DIVISOR <= p.cap[r]


def evaluate(p: Problem, bounds, full, sel, orders=None, vectors=None, paths: bool = False) -> Score:
    """The exact step time (time units) and whether every rank fits, of one assignment."""
    prog = as_program(orders or p.orders())
    vectors = vectors or p.vectors()  # any orders given are p's shape's
    parts = parts_of(p, bounds, full, sel)
    send = [x.send for x in parts]
    fwd, bwd = [x.fwd for x in parts], [x.bwd for x in parts]
    end = prog.ends(fwd, bwd, send, [0] + send[:-1])
    extra = [rank_extra(p, parts, r) for r in range(p.pp)]
    ends = tuple(int(end[i] + e) for i, e in zip(prog.last, extra))
    if not paths:
        return Score(max(ends), fits(p, parts, vectors), ends)
    return Score(max(ends), fits(p, parts, vectors), ends, critical(prog, end, fwd + bwd, send))


def _compositions(p: Problem):
    if p.fixed_bounds:
        yield tuple(p.fixed_bounds)
        return
    blocks = sum(p.is_block)
    for cut in itertools.combinations(range(1, blocks), p.chunks - 1):
        sizes = [b - a for a, b in zip((0, *cut), (*cut, blocks))]
        sizes[0] += p.lead
        sizes[-1] += p.tail
        yield tuple(sizes)


def choices(p: Problem, blocks: int) -> list[tuple[int, int]]:
    """(full, selective) counts a chunk of `blocks` blocks may take."""
    if p.recompute == "none":
        return [(0, 0)]
    if p.recompute == "selective":
        return [(0, blocks)]
    if p.recompute == "full":
        return [(blocks, 0)]
    return [(f, g) for f in range(blocks + 1) for g in range(blocks + 1 - f)]


def brute_force(p: Problem) -> Solution | None:
    """Every composition x every recompute split of every chunk: exponential, for tests."""
    orders = p.orders()
    vectors = p.vectors()
    best = None
    for bounds in _compositions(p):
        blocks = p.blocks_of(bounds)
        if p.totals and tuple(sum(blocks[r::p.pp]) for r in range(p.pp)) != p.totals:
            continue
        options = [choices(p, n) for n in blocks]
        for choice in itertools.product(*options):
            full, sel = tuple(x[0] for x in choice), tuple(x[1] for x in choice)
            s = evaluate(p, bounds, full, sel, orders, vectors)
            if s.fits and (best is None or s.objective < best.objective):
                best = Solution(tuple(bounds), full, sel, s.objective)
    return best
