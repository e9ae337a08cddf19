"""Lower bounds that hold for every partition and recompute choice of a strategy: the search visits
candidates in their order and skips those that cannot beat the best plan (or cannot fit at all)."""
from __future__ import annotations

import math

from planner.cost.model import CostModel
from planner.cost.terms import dp_exposed
from planner.types.strategy import Strategy

__all__ = ["lower_bound", "fits_at_all", "end_floor", "least_comm_buffer"]


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


def lower_bound(cm: CostModel, s: Strategy) -> float:
    """A step time no partition or recompute choice can beat. With W = the per-micro-batch work of all
    layers at their fastest (no recompute, TP collectives included) plus the recompute memory forces:
    for one chunk per rank, every rank r waits for micro-batch 0's forward through the ranks before it
    and for the last backward through them after, so T >= sum_{r'<r} W_r' + n W_r for every r; the
    convex combination that makes every W_r's coefficient equal gives T >= W / (1 - (1 - 1/n)^pp).
    With interleaving, see `_fill_and_work`. Rank 0 then adds its optimizer step and exposed
    data-parallel time, at least `end_floor`."""
    w = _sums(cm, s)["work"] + _forced_recompute(cm, s)
    n, pp = s.num_micro_batches, s.pp
    if pp == 1:
        body = n * w
    elif s.vpp == 1:
        body = w / (1 - (1 - 1 / n) ** pp) if n > 1 else w
    else:
        body = max(_fill_and_work(w, n, pp, _sums(cm, s)["block_work"]), w)
    return body + end_floor(cm, s)


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

