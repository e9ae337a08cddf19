"""The discrete partition floor: can any partition of a strategy's layers reach a step time, counting
whole layers per rank and the recompute each rank's memory forces? It prunes candidates the cheap
bound (`bounds.lower_bound`, continuous) lets through, caps each rank's blocks where branching over
the ranks' totals starts (`rank_caps`), and its greedy ranges seed a plan (`seeding.seed`).

Both relaxations keep only what every schedule obeys (see `reachable`): a floor is never above the
optimum, so a pruned candidate could not have won.
"""
from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from planner.cost.model import CostModel
from planner.cost.terms import ALLOCATOR_DIVISOR
from planner.search.bounds import RankEnds, end_floor, least_comm_buffer, rank_ends
from planner.types.strategy import Strategy

__all__ = ["reachable", "floor", "rank_caps"]

MODES = ("none", "selective", "full")


@dataclass(frozen=True)
class _Ranges:
    """Prefix sums over layers: fastest work per micro-batch, training state, activations with no
    recompute, blocks, and the bytes recompute can save at its cheapest prices (the lower convex hull of
    a block's (bytes saved, seconds) points, as two segments)."""

    work: list[float]
    fwd: list[float]
    """Prefix sums of the forward alone (TP collectives included): recompute never changes it."""
    state: list[int]
    act: list[int]
    blocks: list[int]
    seg1: list[int]
    seg2: list[int]
    rates: tuple[float, float]
    """Seconds per byte of the two segments (the cheapest of any block's, twice, when blocks differ)."""
    fixed: int
    """Bytes every rank holds whatever its layers: receive buffers, the least transient and the least
    communication buffers (FSDP's for its largest layer: 9.8 GB for a 1T block at tp 8)."""
    cap: int
    uniform: bool
    points: tuple[tuple[int, float], ...] = ()
    """Identical blocks: a block's (bytes saved, seconds) under selective and under full recompute, so that
    recompute is priced in whole blocks (`_whole_blocks`); empty otherwise (the hull prices it)."""
    works: dict = field(default_factory=dict, compare=False)
    """`_work` by (a, e, k), once each: the floors' bisections ask the same ranges at every target
    (Llama 3 70B on 8x16: 698k asks, 68k distinct)."""

    @property
    def lead(self) -> int:
        """Prefix layers (before the first block)."""
        return self.blocks.index(1) - 1

    @property
    def tail(self) -> int:
        """Suffix layers (after the last block)."""
        return len(self.blocks) - 1 - self.blocks.index(self.blocks[-1])


def _hull(x) -> tuple[tuple[int, float], tuple[int, float]]:
    """A block's recompute savings as two segments (bytes, seconds per byte), cheaper first."""
    none = x.act["none"]
    pts = sorted(((none - x.act[m], t) for m, t in (("selective", x.elementwise), ("full", x.fwd + x.tp_fwd))
                  if none > x.act[m]), key=lambda p: p[1] / p[0])
    if not pts:
        return (0, 0.0), (0, 0.0)
    (b1, t1), rest = pts[0], pts[1:]
    if rest and rest[0][0] > b1:
        b2, t2 = rest[0]
        return (b1, t1 / b1), (b2 - b1, (t2 - t1) / (b2 - b1))
    return (b1, t1 / b1), (0, 0.0)


def _ranges(cm: CostModel, s: Strategy) -> _Ranges:
    """Built once per cost, terms and data-parallel key: `floor` asks `reachable` dozens of times."""
    dpm = cm.dp_model(s)
    return cm.memo(("floor-ranges", cm.costs_key(s), cm.terms_key(s), dpm), lambda: _build_ranges(cm, s, dpm))


def _build_ranges(cm: CostModel, s: Strategy, dpm) -> _Ranges:
    costs, terms = cm.layer_costs(s), cm.terms(s)
    zero = ((0, 0.0), (0, 0.0))
    hulls = [_hull(x) if k == "block" else zero for k, x in zip(cm.kinds, costs)]
    block_hulls = {h for k, h in zip(cm.kinds, hulls) if k == "block"}
    per_block = {(x.fwd, x.bwd, x.tp_fwd, x.tp_bwd, tuple(x.act.values()), t.state)
                 for k, x, t in zip(cm.kinds, costs, terms) if k == "block"}
    if len(block_hulls) == 1:
        (_, r1), (_, r2) = next(iter(block_hulls))
        rates = (r1, r2 or r1)
    else:
        low = min((r for h in block_hulls for b, r in h if b > 0), default=0.0)
        rates = (low, low)

    def acc(v):
        return list(itertools.accumulate(v, initial=0))
    # every rank holds a block (each chunk does): its transient and its largest layer's communication
    # buffers are at least the least any block has (without blocks, any layer)
    held = [i for i, k in enumerate(cm.kinds) if k == "block"] or list(range(len(costs)))
    least_transient = min(min(costs[i].transient(m) for m in MODES) for i in held)
    least_comm = least_comm_buffer(cm, s)
    uniform = len(per_block) == 1 and len(block_hulls) == 1
    points: tuple = ()
    if uniform and "block" in cm.kinds:
        x = costs[cm.kinds.index("block")]
        points = tuple((x.act["none"] - x.act[m], t) for m, t in (("selective", x.elementwise), ("full", x.fwd + x.tp_fwd)))
    fixed = (2 * min(x.out_bytes for x in costs) if s.pp > 1 else 0) + least_transient + least_comm
    return _Ranges(work=acc(x.fwd + x.bwd + x.tp_fwd + x.tp_bwd for x in costs), fwd=acc(x.fwd + x.tp_fwd for x in costs),
                   state=acc(t.state for t in terms),
                   act=acc(x.act["none"] for x in costs), blocks=acc(k == "block" for k in cm.kinds),
                   seg1=acc(h[0][0] for h in hulls), seg2=acc(h[1][0] for h in hulls), rates=rates, fixed=fixed,
                   cap=cm.usable - cm.reserve - dpm.buffer,
                   uniform=uniform, points=points)


def _work(g: _Ranges, a: int, e: int, k: int) -> float:
    """Least seconds per micro-batch layers a..e-1 cost one rank holding `k` micro-batches' activations
    at once, with the recompute its memory forces priced fractionally on the hull; inf if they cannot
    fit. Memory counts state, the fixed bytes, the activations and the allocator's share of them."""
    got = g.works.get((a, e, k))
    if got is None:
        got = g.works[a, e, k] = _work_of(g, a, e, k)
    return got


def _work_of(g: _Ranges, a: int, e: int, k: int) -> float:
    base = g.work[e] - g.work[a]
    room = g.cap - (g.state[e] - g.state[a]) - g.fixed
    need = (g.act[e] - g.act[a]) - (room + 1) / (k * (1 + 1 / ALLOCATOR_DIVISOR))
    if need <= 0:
        return base
    if g.points:
        return base + _whole_blocks(g.points, g.blocks[e] - g.blocks[a], need)
    c1, c2 = g.seg1[e] - g.seg1[a], g.seg2[e] - g.seg2[a]
    if need > c1 + c2:
        return math.inf
    r1, r2 = g.rates
    return base + r1 * min(need, c1) + r2 * max(0.0, need - c1)


def _whole_blocks(points: tuple[tuple[int, float], ...], m: int, need: float) -> float:
    """The least seconds recompute of whole identical blocks costs to save `need` bytes among `m`
    blocks: f under full, s under selective, s + f <= m (for each f, the fewest s); inf if even all
    under full do not save enough. Rounding to whole blocks is what the fractional hull misses: with a
    few blocks a rank (the 1T's pp 16 interleaved holds 8), one block more under recompute is several
    percent of its time."""
    (b1, t1), (b2, t2) = points
    best = math.inf
    for f in range(m + 1):
        left = need - f * b2
        s = 0 if left <= 0 else math.inf if b1 <= 0 else math.ceil(left / b1)
        if f + s <= m:
            best = min(best, f * t2 + s * t1)
    return best


def _greedy(cm: CostModel, s: Strategy, g: _Ranges, target: float) -> list[int] | None:
    """One chunk per rank: where each rank's range ends when every rank takes as many layers as
    T >= sum_{r'<r} W_r' + n W_r + rank 0's end allows (the path ends on rank 0), or None if the layers
    do not all fit in pp ranks. With `rank_ends`, the sends between the ranks count, and rank 0's end
    is its own blocks' (its inequality alone depends on them: the greedy stays exact) and for the others
    the least rank 0 can have."""
    n, pp, L = s.num_micro_batches, s.pp, len(cm.kinds)
    ends_ = rank_ends(cm, s)
    ends, a = [], 0
    for r in range(pp):
        k = n if s.schedule == "gpipe" else min(n, pp - r)
        if ends_ is None:
            budget = target - end_floor(cm, s)
        else:
            budget = target - 2 * ends_.hops[r] - (ends_.first[s.vpp] if r else 0.0)
        e = a
        while e < L and g.work[a] + n * _work(g, a, e + 1, k) + _own_end(ends_, g, r, e + 1) <= budget:
            e += 1
        ends.append(e)
        if e == L:
            return ends + [L] * (pp - 1 - r)
        a = e
    return None


def _own_end(ends: RankEnds | None, g: _Ranges, r: int, e: int) -> float:
    """One chunk per rank: rank 0's end when its range ends at layer e (0 for the other ranks, whose
    paths here end on rank 0; and without `rank_ends`, whose `end_floor` is in the budget)."""
    return ends.first[g.blocks[e] - g.blocks[0]] if ends is not None and r == 0 else 0.0


def _interleaved(cm: CostModel, s: Strategy, g: _Ranges, target: float) -> list[int] | None:
    """Interleaved, identical blocks: rank r starts after micro-batch 0's forward through r chunks of a
    block at least and holds, besides its edge layers (prefix on rank 0, suffix on the last), at most
    the m_r blocks with n W_r + r w_min + rank 0's end <= T (the last backward goes on back through
    chunks r-1..0, a block each at least) and n W_r + r f_min + its own end <= T (`rank_ends`, with the
    sends between the ranks); the ranks must hold every block, vpp each at least. Rank 0's end depends
    on its own blocks m_0, so each m_0 it can hold is tried (the most first). Its activations count at
    the in-flight vector with the largest least entry (every chunk holds a block). The m_r, or None
    when they cannot hold the model."""
    rows = _rows(cm, s, g, target)
    if rows is None:
        return None
    works, room, zero_end = rows
    for m0 in range(len(works[0]) - 1, s.vpp - 1, -1):
        most = [m0] + _most(works, room, zero_end(m0))
        if min(most) >= s.vpp and sum(most) >= g.blocks[-1]:
            return most
    return None


def rank_caps(cm: CostModel, s: Strategy, target: float) -> list[int] | None:
    """Interleaved, identical blocks: the most blocks each pipeline rank can hold in any partition
    whose step is at most `target` (`_interleaved`'s inequalities, rank 0's end at its least); None
    for other strategies. Branching over the ranks' totals starts inside them (`totals.branches`):
    GPT 1T tp8-pp32 v3 below 64.91 s/step allows 4 blocks a rank, 128 in all, which leaves one
    composition where the LP alone allowed the head's rank 3 and others 5."""
    if s.vpp == 1 or s.pp == 1:
        return None
    g = _ranges(cm, s)
    if not g.uniform:
        return None
    rows = _rows(cm, s, g, target)
    if rows is None:
        return [s.vpp - 1] * s.pp  # some rank cannot hold a block a chunk: no partition reaches it
    works, room, zero_end = rows
    return [len(works[0]) - 1] + _most(works, room, zero_end(s.vpp))


def _most(works: list[list[float]], room: list[float], e0: float) -> list[int]:
    """Ranks 1..pp-1: the most blocks each can hold with rank 0's end `e0` (`works` never falls)."""
    return [bisect.bisect_right(works[r], room[r] - e0) - 1 for r in range(1, len(works))]


def _rows(cm: CostModel, s: Strategy, g: _Ranges, target: float):
    """`_interleaved`'s per-rank parts: n W_r(m) for each m its own path allows (m = 0, 1, ...; None
    when a rank cannot hold vpp blocks), what the path through it to rank 0 leaves of `target` for
    them and rank 0's end (per rank), and rank 0's end as a function of its blocks."""
    n, pp, L, vpp = s.num_micro_batches, s.pp, len(cm.kinds), s.vpp
    b, tail = g.lead, g.tail  # b: the first block's index
    w_min = g.work[b + 1] - g.work[b]
    f_min = g.fwd[b + 1] - g.fwd[b]
    ks = cm.memo(("mixed-in-flight", s.schedule, pp, vpp, n),
                 lambda: [_mixed_floor(tuple(v)) for v in cm.in_flight(s)])
    ends = rank_ends(cm, s)
    zero_end = (lambda m: end_floor(cm, s)) if ends is None else (lambda m: ends.first[m])
    hops = ends.hops if ends is not None else (0.0,) * pp
    room = [target - r * w_min - 2 * hops[r] for r in range(pp)]
    widest = [x - zero_end(vpp) for x in room]  # room at rank 0's least end: no m0 leaves more
    works = []
    for r in range(pp):
        row: list[float] = []
        for m in range(g.blocks[-1] + 1):
            a, e = (0 if r == 0 else b), b + m
            x = n * _edge_work(g, a, e, ks[r], L, tail if r == pp - 1 else 0)
            if ends is not None and r:
                own = (ends.last if r == pp - 1 else ends.middle)[m]
                x_own = x + r * f_min + hops[r] + own
            else:
                x_own = x + (zero_end(m) if r == 0 else 0.0)
            if x_own > target or (r and x > widest[r]):
                break
            row.append(x)
        if len(row) <= vpp:
            return None
        works.append(row)
    return works, room, zero_end


def _mixed_floor(vectors: tuple[tuple[int, ...], ...]) -> float:
    """A k with sum_i v_i act_i >= k sum_i act_i for some in-flight vector v, whatever the chunks'
    activations: the peak is at least any convex mix t u + (1 - t) w of two vectors, so k = the best
    mix's least entry. The least entry is concave in t, so its maximum is at t = 0, 1 or where two
    entries cross; every pair and crossing at once (numpy: 1T shapes have 25-130 vectors a rank)."""
    v = np.asarray(vectors, dtype=float)
    u, w = v[:, None, :], v[None, :, :]
    i, j = np.triu_indices(v.shape[1], 1)
    den = (u[..., i] - w[..., i]) - (u[..., j] - w[..., j])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(den != 0, (w[..., j] - w[..., i]) / den, 0.0)
    t = np.where((t > 0) & (t < 1), t, 0.0)
    ts = np.concatenate([np.zeros(t.shape[:2] + (1,)), np.ones(t.shape[:2] + (1,)), t], axis=-1)[..., None]
    mix = ts * u[:, :, None, :] + (1 - ts) * w[:, :, None, :]
    return float(mix.min(axis=-1).max())


def _edge_work(g: _Ranges, a: int, e: int, k: int, L: int, tail: int) -> float:
    """`_work` of blocks a..e-1 plus the suffix layers when the rank holds them."""
    if not tail:
        return _work(g, a, e, k)
    # the suffix is contiguous with the last blocks; shifting the block range to end at L - tail
    # keeps its length (identical blocks)
    shift = L - tail - e
    return _work(g, a + shift, L, k)


def reachable(cm: CostModel, s: Strategy, target: float) -> bool:
    """False when no partition and recompute can have a step time at most `target` (a necessary
    condition, cheap: one pass over the layers). One chunk per rank: rank r's last action ends no
    earlier than its predecessors' work on the first micro-batch, its own n micro-batches and the last
    backward back through them, T >= sum_{r'<r} W_r' + n W_r + rank 0's end (`_greedy`), W being the fastest work
    per micro-batch plus the recompute that rank's memory forces at its in-flight count; a greedy over
    contiguous ranges decides this relaxation exactly (a later start only loosens a rank's inequality).
    Interleaved: `_interleaved`."""
    g = _ranges(cm, s)
    if s.vpp > 1:
        return not g.uniform or _interleaved(cm, s, g, target) is not None
    return _greedy(cm, s, g, target) is not None


def floor(cm: CostModel, s: Strategy, lo: float, hi: float, rel: float = 1e-6) -> float:
    """The least step time `reachable` allows between `lo` (a known lower bound) and `hi`, from below."""
    return _bisect(cm, s, lo, hi, rel)[0]


def _bisect(cm: CostModel, s: Strategy, lo: float, hi: float, rel: float) -> tuple[float, float]:
    """(a floor, a reachable target) within `rel` of each other, or (hi, hi) if `hi` is not reachable."""
    if reachable(cm, s, lo):
        return lo, lo
    if not reachable(cm, s, hi):
        return hi, hi
    while hi - lo > rel * hi:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reachable(cm, s, mid) else (mid, hi)
    return lo, hi
