"""The rank end floors (`bounds.rank_ends`) against every assignment of a real model's problem: for each
block count a rank can hold, the least end (optimizer, data-parallel compute, exposed data-parallel
time: `partition.rank_extra`, the objective's own term) over every composition and recompute of its
chunks is at least the floor, and equals it (the floor is the best assignment's, not a loose bound);
the hops are the problem's own sends. And the discrete floor built on them (`floor.floor`) stays at or
below the exact optimum (`pricing.evaluate_fixed`, itself checked against brute force) where the end
terms matter: data parallel, ZeRO 0, 2 and 3, one chunk per rank and interleaved."""
import itertools
from dataclasses import replace

import pytest

import planner
from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.search.bounds import lower_bound, rank_ends
from planner.search.floor import floor, rank_caps
from planner.search.partition import _compositions, brute_force, choices, part, rank_extra
from planner.search.pricing import TIME_UNIT, evaluate_fixed, problem
from planner.search.space import parse_layout

from conftest import example

LAYOUTS = ["tp1-pp2-dp4-mbs1-interleaved-v2-zero2", "tp1-pp2-dp4-mbs1-interleaved-v3-zero3",
           "tp1-pp2-dp4-mbs1-interleaved-v2", "tp1-pp4-dp2-mbs1-interleaved-v2-zero2",
           "tp1-pp2-dp4-mbs1-zero2", "tp2-pp4-dp1-mbs1-zero0", "tp1-pp4-dp2-mbs2-zero3", "tp1-pp2-dp4-mbs1-gpipe"]
ROUNDING = 40 * TIME_UNIT  # the problem rounds each layer's times up to a unit: a few units a rank


@pytest.fixture(scope="module", params=["gpt", "llama"])
def prof(request, tmp_path_factory):
    """Eight blocks (the examples' tiny models have four: too few chunks to vary a rank's count)."""
    f = tmp_path_factory.mktemp("m") / "m.py"
    if request.param == "gpt":
        body = ("from gpt import GPT, GPTConfig, batch\n"
                "def model(): return GPT(GPTConfig(n_layer=8, n_embd=1024, n_head=4, vocab_size=256, seq_len=8))\n")
    else:
        body = ("from llama import Llama, LlamaConfig, batch\n"
                "def model(): return Llama(LlamaConfig(n_layers=8, dim=1024, n_heads=4, n_kv_heads=2, vocab_size=256, "
                "seq_len=8, ffn_dim=2048))\n")
    f.write_text(f"import sys; sys.path.insert(0, {str(example(''))!r})\n" + body)
    return planner.profile(str(f), micro_batch=1, dtype="bfloat16")


def _cm(prof, fraction: float = 0.9) -> CostModel:
    return CostModel(prof, parse_gpus("8", "a100-80gb")[0], memory_fraction=fraction)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rank_ends_are_the_least_end_of_each_block_count(prof, layout):
    cm = _cm(prof)
    s = parse_layout(layout, prof, 8, 16)
    p, ends = problem(cm, s), rank_ends(cm, s)
    assert ends is not None
    least: dict[tuple[int, int], float] = {}  # (rank kind, blocks) -> least end seen, seconds
    for bounds in _compositions(p):
        starts = list(itertools.accumulate(bounds, initial=0))
        per_chunk = p.blocks_of(bounds)
        for r in range(p.pp):
            mine = list(range(r, p.chunks, p.pp))
            kind = 0 if r == 0 else 2 if r == p.pp - 1 else 1
            m = sum(per_chunk[c] for c in mine)
            for modes in itertools.product(*(choices(p, per_chunk[c]) for c in mine)):
                parts = [None] * p.chunks
                for c, (f, g) in zip(mine, modes):
                    parts[c] = part(p, starts, c, f, g)
                end = rank_extra(p, parts, r) * TIME_UNIT
                least[kind, m] = min(least.get((kind, m), end), end)
    for kind, lists in enumerate((ends.first, ends.middle, ends.last)):
        seen = {m: v for (k, m), v in least.items() if k == kind}
        if not seen:
            continue  # pp 2 has no middle rank
        for m in range(len(lists)):
            above = [v for mm, v in seen.items() if mm >= m]
            if not above:
                assert lists[m] == float("inf"), (kind, m)  # more blocks than a rank can hold
                continue
            assert lists[m] <= min(above) + ROUNDING, (kind, m, lists[m], min(above))
            assert lists[m] >= min(above) - ROUNDING, (kind, m, lists[m], min(above))
    block = p.is_block.index(True)
    sends = [p.send[c][block] * TIME_UNIT for c in range(p.pp - 1)]
    for r in range(p.pp):
        assert ends.hops[r] == pytest.approx(sum(sends[:r]), abs=ROUNDING)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("fraction", [0.9, 0.0])
def test_floors_stay_below_the_exact_optimum(prof, layout, fraction):
    """fraction 0.0: the least memory that fits full recompute everywhere, where recompute binds."""
    s = parse_layout(layout, prof, 8, 16)
    if fraction == 0.0:
        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            ok = _cm(prof, mid).estimate(replace(s, recompute=("full",) * s.chunks), 16).feasible
            lo, hi = (lo, mid) if ok else (mid, hi)
        fraction = hi
    cm = _cm(prof, fraction)
    exact = evaluate_fixed(cm, s, 16)
    assert exact.solver_status == "OPTIMAL"
    best = exact.estimate.step_time_s
    lb = lower_bound(cm, s)
    f = floor(cm, s, lb, 4 * best)
    assert lb <= f * (1 + 1e-9) and f <= best * (1 + 1e-9), (lb, f, best)


@pytest.mark.parametrize("layout", [x for x in LAYOUTS if "interleaved" in x and "pp2" in x])  # pp 4 v2: one composition
@pytest.mark.parametrize("batch", [8, 32])
def test_rank_caps_keep_every_composition_that_beats_the_step(prof, layout, batch):
    """`floor.rank_caps` against brute force over every assignment (no recompute: a restriction, so the
    caps, which price recompute at its cheapest, must hold for it too): for every step T, a composition
    of blocks over the ranks whose best step is at most T is within the caps at T. The branching over
    totals starts inside them (`totals.branches`); a cap that cut off such a composition would lose
    the optimum."""
    cm = _cm(prof)
    s = parse_layout(layout, prof, 8, batch)
    p = problem(cm, s, "none")
    best: dict[tuple[int, ...], float] = {}
    for totals in {tuple(sum(p.blocks_of(b)[r::p.pp]) for r in range(p.pp)) for b in _compositions(p)}:
        sol = brute_force(replace(p, totals=totals))
        if sol is not None:
            best[totals] = sol.objective * TIME_UNIT
    assert best
    excluded = 0
    for step in sorted(set(best.values())):
        caps = rank_caps(cm, s, step)
        for totals, value in best.items():
            inside = all(t <= c for t, c in zip(totals, caps))
            if value <= step:
                assert inside, (step, totals, value, caps)
            excluded += not inside
    assert excluded > 0  # the caps do cut off compositions that cannot beat the step
