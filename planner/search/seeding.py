"""A plan without the solver, from the discrete floor (`floor.py`): its greedy ranges (one chunk per rank)
or its block counts per rank (interleaved) at the least step it allows, each rank with the least
recompute that fits its exact memory. It gives the search a strong best before the first exact solve."""
from __future__ import annotations

import itertools
from dataclasses import replace

from planner.cost.model import CostModel
from planner.search.floor import _bisect, _greedy, _interleaved, _ranges
from planner.search.partition import Problem, part, parts_of, rank_fits
from planner.types.strategy import Strategy, recompute_name

__all__ = ["seed"]


def seed(cm: CostModel, s: Strategy, p: Problem, lo: float, hi: float) -> Strategy | None:
    """A plan without the solver (`p` is the strategy's partition problem). One chunk per rank: the
    greedy ranges at the floor's step time, each rank with the least whole-block recompute that fits its
    exact memory; None when a rank is left without a block or cannot fit. Interleaved: `_seed_chunks`."""
    if s.vpp > 1:
        return _seed_chunks(cm, s, p, lo, hi)
    g = _ranges(cm, s)
    ends = _greedy(cm, s, g, _bisect(cm, s, lo, hi, 1e-6)[1])
    if ends is None:
        return None
    starts = [0, *ends[:-1]]
    if any(g.blocks[e] - g.blocks[a] < 1 for a, e in zip(starts, ends)):
        return None
    bounds = tuple(e - a for a, e in zip(starts, ends))
    vectors = cm.in_flight(s)
    names = []
    for r, (a, e) in enumerate(zip(starts, ends)):
        choice = _least_recompute(p, bounds, r, vectors)
        if choice is None:
            return None
        names.append(recompute_name(*choice, g.blocks[e] - g.blocks[a]))
    return replace(s, layers_per_chunk=bounds, recompute=tuple(names))


def _least_recompute(p: Problem, bounds: tuple[int, ...], r: int, vectors) -> tuple[int, int] | None:
    """The cheapest (full, selective) block counts for rank r's chunk (one chunk per rank) that fit its
    memory exactly (`partition.rank_fits`): for each full count, the fewest selective blocks that fit
    (memory falls as they grow: bisection)."""
    zero = (0,) * p.chunks
    nb = sum(p.is_block[sum(bounds[:r]):sum(bounds[:r + 1])])
    starts = list(itertools.accumulate(bounds, initial=0))
    parts = parts_of(p, bounds, zero, zero)

    def chunk(f: int, sel: int) -> tuple[int, bool]:
        parts[r] = part(p, starts, r, f, sel)  # only rank r's chunk changes
        return parts[r].bwd, rank_fits(p, parts, vectors, r)
    best = None
    for f in range(nb + 1):
        lo, hi = 0, nb - f
        if not chunk(f, hi)[1]:
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if chunk(f, mid)[1] else (mid + 1, hi)
        cost = chunk(f, lo)[0]
        if best is None or (cost, f, lo) < best:
            best = (cost, f, lo)
    return None if best is None else best[1:]


def _seed_chunks(cm: CostModel, s: Strategy, p: Problem, lo: float, hi: float) -> Strategy | None:
    """Interleaved, identical blocks: the block counts `_interleaved` allows at the floor's step time,
    trimmed to the model (from the fullest ranks), spread over each rank's chunks with the remainder on
    its later chunks (they hold fewer micro-batches in flight); each rank takes the cheapest single
    recompute mode that fits its exact memory. None when that fails."""
    g = _ranges(cm, s)
    if not g.uniform:
        return None
    most = _interleaved(cm, s, g, _bisect(cm, s, lo, hi, 1e-6)[1])
    if most is None:
        return None
    pp, vpp = s.pp, s.vpp
    for _ in range(sum(most) - g.blocks[-1]):
        r = max(range(pp), key=lambda i: (most[i], i))
        if most[r] <= vpp:
            return None
        most[r] -= 1
    nb = [0] * s.chunks  # blocks per chunk
    for r in range(pp):
        base, extra = divmod(most[r], vpp)
        for j in range(vpp):
            nb[r + j * pp] = base + (1 if j >= vpp - extra else 0)
    sizes = [x + (c == 0) * g.lead + (c == s.chunks - 1) * g.tail for c, x in enumerate(nb)]
    full, sel = [0] * s.chunks, [0] * s.chunks
    vectors = cm.in_flight(s)
    starts = list(itertools.accumulate(sizes, initial=0))
    parts = parts_of(p, tuple(sizes), tuple(full), tuple(sel))
    for r in range(pp):
        mine = list(range(r, s.chunks, pp))

        def at(level: int) -> bool:
            _ladder(level, [nb[c] for c in mine], mine, full, sel)
            for c in mine:  # only rank r's chunks change
                parts[c] = part(p, starts, c, full[c], sel[c])
            return rank_fits(p, parts, vectors, r)
        lo_, hi_ = 0, 2 * most[r]
        if not at(hi_):
            return None
        while lo_ < hi_:
            mid = (lo_ + hi_) // 2
            lo_, hi_ = (lo_, mid) if at(mid) else (mid + 1, hi_)
        at(lo_)
    names = tuple(recompute_name(full[c], sel[c], nb[c]) for c in range(s.chunks))
    return replace(s, layers_per_chunk=tuple(sizes), recompute=names)


def _ladder(level: int, counts: list[int], chunks: list[int], full: list[int], sel: list[int]) -> None:
    """A rank's recompute at `level`: its blocks in chunk order (the first local chunk holds the most
    micro-batches in flight), the first `level` selective, then the first `level - m` upgraded to full."""
    m = sum(counts)
    n_sel, n_full = min(level, m), max(0, level - m)
    for c, k in zip(chunks, counts):
        f = min(k, n_full)
        g = min(k - f, max(0, n_sel - f))
        full[c], sel[c] = f, g
        n_full -= f
        n_sel -= f + g
