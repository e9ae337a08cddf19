"""Lower bounds that hold for every partition and recompute choice of a strategy: the search visits
candidates in their order and skips those that cannot beat the best plan (or cannot fit at all)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from planner.cost.model import CostModel
from planner.cost.terms import dp_compute, dp_exposed
from planner.types.strategy import Strategy

__all__ = ["lower_bound", "fits_at_all", "end_floor", "least_comm_buffer", "RankEnds", "rank_ends", "least_end"]


def _room(cm: CostModel, s: Strategy) -> float:
    """Bytes of activations all pipeline ranks together can hold at most (one chunk per rank): rank r
    keeps k_r micro-batches in flight, so sum(act_r) <= sum((cap - state_r) / k_r), and state counted at
    the largest k is the least it can take away. -inf when the state alone cannot fit."""
    cap = cm.usable - cm.reserve - cm.dp_model(s).buffer - least_comm_buffer(cm, s)
    n = s.num_micro_batches  # torch's orders (schedule.py): GPipe holds all n, 1F1B min(n, pp - r)
    ks = [n if s.schedule == "gpipe" else min(n, s.pp - r) for r in range(s.pp)]
    state = cm.state_total(s)
    if state > cap * s.pp:
        return -math.inf
    return sum(cap / k for k in ks) - state / max(ks)


def _forced_recompute(cm: CostModel, s: Strategy) -> float:
    """Seconds per micro-batch (summed over ranks) of recompute that memory forces at least: the bytes
    that must go, at the cheapest seconds per byte any block's recompute offers. inf when even full
    recompute everywhere cannot fit."""
    if s.vpp > 1:  # in-flight counts differ per chunk: no simple room, no forced recompute
        return 0.0
    sums = _sums(cm, s)
    need = sums["act"] - _room(cm, s)
    if need <= 0:
        return 0.0
    if need > sums["most"] or not sums["blocks"]:
        return math.inf
    return need * sums["rate"]


def _sums(cm: CostModel, s: Strategy) -> dict:
    """Per-layer cost totals the bounds use, once per (tp, sp, micro-batch)."""
    def make() -> dict:
        costs = cm.layer_costs(s)
        blocks = [x for k, x in zip(cm.kinds, costs) if k == "block"]
        rates = [r for x in blocks for r in (x.elementwise / max(1, x.act["none"] - x.act["selective"]),
                                             (x.fwd + x.tp_fwd) / max(1, x.act["none"] - x.act["full"]))]
        return {"act": sum(x.act["none"] for x in costs), "act_full": sum(x.act["full"] for x in costs),
                "most": sum(x.act["none"] - x.act["full"] for x in blocks), "blocks": len(blocks),
                "rate": min(rates, default=0.0), "work": sum(x.fwd + x.bwd + x.tp_fwd + x.tp_bwd for x in costs),
                "block_work": min((x.fwd + x.bwd + x.tp_fwd + x.tp_bwd for x in blocks), default=0.0)}
    return cm.memo(("bound-sums", *cm.costs_key(s)), make)


def least_comm_buffer(cm: CostModel, s: Strategy) -> int:
    """Bytes of communication buffers every rank holds at least: FSDP's for the rank's largest layer
    (every rank holds a block; without blocks, some layer). 9.8 GB for a GPT 1T block at tp 8: a floor
    that leaves them out lets interleaved candidates of the 1T through that memory rules out."""
    def make() -> int:
        terms = cm.terms(s)
        held = [t for k, t in zip(cm.kinds, terms) if k == "block"] or terms
        return min(t.comm_buffer for t in held)
    return cm.memo(("least-comm", cm.terms_key(s)), make)


def fits_at_all(cm: CostModel, s: Strategy) -> bool:
    """False only when no partition and recompute can fit `s` (a necessary condition)."""
    if s.vpp > 1:
        state = cm.state_total(s)
        return (state + _sums(cm, s)["act_full"]) / s.pp + cm.reserve + least_comm_buffer(cm, s) <= cm.usable
    return _forced_recompute(cm, s) < math.inf


def end_floor(cm: CostModel, s: Strategy) -> float:
    """The least optimizer + exposed data-parallel time any rank ends with: exact inputs for one rank,
    one block's share (each rank holds one at least, with every window as large as it can be) else.
    Computed once per (terms, costs, data-parallel model) key."""
    dpm = cm.dp_model(s)
    return cm.memo(("end-floor", cm.terms_key(s), cm.costs_key(s), dpm), lambda: _end_floor(cm, s, dpm))


def _end_floor(cm: CostModel, s: Strategy, dpm) -> float:
    terms, costs = cm.terms(s), cm.layer_costs(s)
    if s.pp == 1:
        fwd = sum(x.fwd + x.tp_fwd for x in costs)
        slow = sum(x.bwd + x.tp_bwd + (x.fwd + x.tp_fwd if k == "block" else 0) for k, x in zip(cm.kinds, costs))
        first = terms[0].sync + terms[0].gather
        return sum(t.opt for t in terms) + dp_exposed(dpm, sum(t.sync for t in terms), sum(t.gather for t in terms),
                                                      first, fwd, slow, slow)
    blocks = [t for k, t in zip(cm.kinds, terms) if k == "block"] or terms
    first = min(t.sync + t.gather for t in [terms[0], *blocks])
    big = math.inf
    return min(t.opt for t in blocks) + dp_exposed(dpm, min(t.sync for t in blocks), min(t.gather for t in blocks),
                                                   first, big, big, big)


@dataclass(frozen=True)
class RankEnds:
    """What a pipeline rank ends its step with at least (optimizer, its data-parallel compute and its
    exposed data-parallel time, `partition.rank_extra`) as a function of how many blocks it holds, for
    models laid out prefix, identical-or-not blocks, suffix. The end grows with the rank's layers: its
    reduce-scatters overlap only its last backward, one chunk's (GPT 1T tp8-pp32-dp12 v4: 1.39 s a rank
    holding four blocks, against 0.05 s for `end_floor`'s one block with every window as large as can
    be). Each list is indexed by block count and never falls as it grows (a minimum over the counts at
    or above), so that a rank's inequality stays monotone in its blocks; inf past the most blocks a
    rank can hold. And the least time between ranks: the sends of a block's output from rank j to
    j + 1, summed over j < r."""

    first: tuple[float, ...]
    """Rank 0 (holding the prefix layers)."""
    middle: tuple[float, ...]
    last: tuple[float, ...]
    """The last rank (holding the suffix layers)."""
    hops: tuple[float, ...]
    """hops[r]: seconds of the sends from rank 0 to rank r, one block output a hop."""


def rank_ends(cm: CostModel, s: Strategy) -> RankEnds | None:
    """`RankEnds` of a pipeline strategy whose model is laid out prefix, blocks, suffix (None otherwise,
    or with one rank): per block its least optimizer and synchronisation seconds and its largest
    forward and backward (full recompute) windows, so that every count's end is at most any real
    rank's with that many blocks."""
    edges = _edges(cm)
    if s.pp == 1 or edges is None:
        return None
    dpm = cm.dp_model(s)

    def make() -> RankEnds:
        b = _per_block(cm, s, dpm)
        out = min(x.out_bytes for k, x in zip(cm.kinds, cm.layer_costs(s)) if k == "block")
        hops = tuple(itertools.accumulate((cm.send(s, j, j + 1, out) for j in range(s.pp - 1)), initial=0.0))
        return RankEnds(first=_ends(b, s, dpm, "first"), middle=_ends(b, s, dpm, "middle"),
                        last=_ends(b, s, dpm, "last"), hops=hops)
    return cm.memo(("rank-ends", cm.costs_key(s), cm.terms_key(s), dpm, s.pp, s.vpp), make)


def least_end(cm: CostModel, s: Strategy) -> float:
    """The least end rank 0 can have (`RankEnds.first` at one block a chunk, without the sends and the
    other ranks' lists: `lower_bound` asks it of every candidate); `end_floor` when there are none."""
    edges = _edges(cm)
    if s.pp == 1 or edges is None:
        return end_floor(cm, s)
    dpm = cm.dp_model(s)
    key = ("least-end", cm.costs_key(s), cm.terms_key(s), dpm, s.pp, s.vpp)
    return cm.memo(key, lambda: _ends(_per_block(cm, s, dpm), s, dpm, "first")[s.vpp])


def _edges(cm: CostModel) -> tuple[int, int] | None:
    """Prefix and suffix layer counts of a model laid out prefix, blocks, suffix; None otherwise (once
    per model: the floors ask it at every step they try)."""
    def make() -> tuple[int, int] | None:
        kinds = cm.kinds
        if "block" not in kinds:
            return None
        lead = kinds.index("block")
        tail = len(kinds) - 1 - max(i for i, k in enumerate(kinds) if k == "block")
        return None if any(k != "block" for k in kinds[lead:len(kinds) - tail]) else (lead, tail)
    return cm.memo(("block-edges",), make)


def _per_block(cm: CostModel, s: Strategy, dpm) -> dict:
    """What `_ends` needs: per block the least optimizer (with its DP compute), reduce-scatter, gather
    and first-layer seconds and the largest forward and full-recompute backward; the prefix's and the
    suffix's sums; how many blocks. Once per (costs, terms, DP model)."""
    def make() -> dict:
        lead, tail = _edges(cm)
        costs, terms = cm.layer_costs(s), cm.terms(s)
        opt = [t.opt + dp_compute(dpm, t.sync, t.gather, t.sync_copy, t.gather_copy) for t in terms]
        fwd = [x.fwd + x.tp_fwd for x in costs]
        full = [x.bwd + x.tp_bwd + (x.fwd + x.tp_fwd if k == "block" else 0.0) for k, x in zip(cm.kinds, costs)]
        blocks = range(lead, len(costs) - tail)

        def edge(rng: range) -> dict:
            return {"opt": sum(opt[i] for i in rng), "sync": sum(terms[i].sync for i in rng),
                    "gather": sum(terms[i].gather for i in rng), "fwd": sum(fwd[i] for i in rng),
                    "full": sum(full[i] for i in rng)}
        first = min(terms[i].sync + terms[i].gather for i in blocks)
        return {"opt": min(opt[i] for i in blocks), "sync": min(terms[i].sync for i in blocks),
                "gather": min(terms[i].gather for i in blocks), "fwd": max(fwd[i] for i in blocks),
                "full": max(full[i] for i in blocks), "first": first, "count": len(blocks),
                "first0": terms[0].sync + terms[0].gather if lead else first,
                "pre": edge(range(lead)), "post": edge(range(len(costs) - tail, len(costs))), "none": edge(range(0))}
    return cm.memo(("end-blocks", cm.costs_key(s), cm.terms_key(s), dpm), make)


def _ends(b: dict, s: Strategy, dpm, kind: str) -> tuple[float, ...]:
    """One `RankEnds` list: rank 0 ("first", the prefix in its first local chunk), a middle rank or the
    last ("last", the suffix in its last local chunk), for 0..all blocks; inf past the most a rank can
    hold (the other ranks hold a block a chunk at least)."""
    vpp, count = s.vpp, b["count"]
    most = count - vpp * (s.pp - 1)
    e = b["pre"] if kind == "first" else b["post"] if kind == "last" else b["none"]
    first = b["first0"] if kind == "first" else b["first"]
    in_first = kind != "last" or vpp == 1
    raw = [math.inf] * (count + 1)
    for m in range(vpp, most + 1):
        last = (m - vpp + 1) * b["full"] + (e["full"] if in_first else 0.0)
        raw[m] = e["opt"] + m * b["opt"] + dp_exposed(dpm, e["sync"] + m * b["sync"], e["gather"] + m * b["gather"],
                                                      first, e["fwd"] + m * b["fwd"], e["full"] + m * b["full"], last)
    return tuple(itertools.accumulate(reversed(raw), min))[::-1]


def lower_bound(cm: CostModel, s: Strategy) -> float:
    """A step time no partition or recompute choice can beat. With W = the per-micro-batch work of all
    layers at their fastest (no recompute, TP collectives included) plus the recompute memory forces:
    for one chunk per rank, every rank r waits for micro-batch 0's forward through the ranks before it
    and for the last backward through them after, so T >= sum_{r'<r} W_r' + n W_r for every r; the
    convex combination that makes every W_r's coefficient equal gives T >= W / (1 - (1 - 1/n)^pp).
    With interleaving, see `_fill_and_work`. Every path there ends on rank 0, which then adds its
    optimizer step and exposed data-parallel time: at least its `rank_ends` with one block a chunk
    (`end_floor` for a model not laid out prefix, blocks, suffix)."""
    w = _sums(cm, s)["work"] + _forced_recompute(cm, s)
    n, pp = s.num_micro_batches, s.pp
    if pp == 1:
        body = n * w
    elif s.vpp == 1:
        body = w / (1 - (1 - 1 / n) ** pp) if n > 1 else w
    else:
        body = max(_fill_and_work(w, n, pp, _sums(cm, s)["block_work"]), w)
    return body + least_end(cm, s)


def _fill_and_work(w: float, n: int, pp: int, w_min: float) -> float:
    """Interleaved: rank r starts after micro-batch 0's forward through chunks 0..r-1 and its last
    backward (chunk r's) is followed by the backwards of chunks r-1..0, each at least one block, so
    T >= r w_min + n W_r with sum W_r = W; the least such T fills the ranks like water: with the first
    k ranks under water, n W = sum_{r<k} (T - r w_min), so T = (n W + w_min k(k-1)/2) / k, valid when
    rank k (if any) would start at or above it."""
    for k in range(1, pp + 1):
        t = (n * w + w_min * k * (k - 1) / 2) / k
        if k == pp or t <= k * w_min:
            return t
    return math.inf  # not reached: k == pp returns

