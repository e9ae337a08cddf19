"""The discrete partition floor (`floor.reachable`) never rises above the exact optimum (the
solver's, itself checked against brute force in test_partition.py), and the greedy seed is a real,
fitting plan no better than that optimum. Memory is squeezed so that recompute is forced."""
from dataclasses import replace

import pytest

from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.search.bounds import lower_bound
from planner.search.floor import floor
from planner.search.seeding import seed
from planner.search import pricing
from planner.search.master import Warm
from planner.search.pricing import TIME_UNIT, evaluate_fixed, problem
from planner.search.space import parse_layout

from conftest import example

LAYOUTS = ["tp1-pp2-dp2-mbs1", "tp2-pp2-dp1-mbs2", "tp1-pp4-dp1-mbs1", "tp1-pp4-dp1-mbs1-gpipe",
           "tp1-pp2-dp2-mbs1-interleaved-v2", "tp1-pp4-dp1-mbs1-zero0", "tp1-pp2-dp2-mbs1-zero3"]


@pytest.fixture(scope="module", params=["gpt.py:tiny", "llama.py:tiny"])
def prof(request):
    import planner
    return planner.profile(example(request.param), micro_batch=1, dtype="float32")


def _fraction(prof, s, mode: str) -> float:
    """The least memory fraction (of an A100's) at which `s` fits with `mode` everywhere, even split."""
    cluster = parse_gpus("4", "a100-80gb")[0]
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        cm = CostModel(prof, cluster, memory_fraction=mid)
        lo, hi = (lo, mid) if cm.estimate(replace(s, recompute=(mode,) * s.chunks), 8).feasible else (mid, hi)
    return hi


def _squeezed(prof, s, squeeze: float) -> CostModel:
    """Usable memory `squeeze` of the way from what full recompute needs to what none needs: below 1
    recompute is forced somewhere, above 1 nothing binds."""
    lo, hi = _fraction(prof, s, "full"), _fraction(prof, s, "none")
    return CostModel(prof, parse_gpus("4", "a100-80gb")[0], memory_fraction=lo + squeeze * (hi - lo))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("squeeze", [1.5, 0.7, 0.3, 0.02])
def test_floor_is_below_the_exact_optimum_and_the_seed_above(prof, layout, squeeze):
    s = parse_layout(layout, prof, 4, 8)
    cm = _squeezed(prof, s, squeeze)
    lb = lower_bound(cm, s)
    exact = evaluate_fixed(cm, s, 8)
    f = floor(cm, s, lb, 4 * lb + 1.0)
    assert lb <= f * (1 + 1e-9)
    if exact.estimate is None or not exact.estimate.feasible:
        assert exact.solver_status == "NO_FIT"
        assert seed(cm, s, problem(cm, s), lb, 4 * lb + 1.0) is None
        return
    assert exact.solver_status == "OPTIMAL"
    best = exact.estimate.step_time_s
    assert f <= best * (1 + 1e-9), (f, best)
    seeded = seed(cm, s, problem(cm, s), lb, 4 * lb + 1.0)
    if s.vpp == 1 and squeeze > 1:
        assert seeded is not None  # nothing binds: the greedy ranges are a plan
    if seeded is not None:
        e = cm.estimate(seeded, 8)
        assert e.feasible
        assert e.step_time_s >= best * (1 - 1e-9)
    # what the search primes a first solve with (`Run.prime`): the floor as a bound, the seed as incumbent
    start = pricing.seeded(cm, s, lb, 4 * lb + 1.0)
    assert (start is None) == (seeded is None)
    if start is not None:
        # the problem's times are the estimate's rounded up to 10 ns a layer (0.1% of a tiny model's step)
        step = cm.estimate(seeded, 8).step_time_s
        assert step * (1 - 1e-9) <= start.objective * TIME_UNIT <= step * 1.01
    primed = Warm(bound=max(0, int(f * (1 - 1e-7) / TIME_UNIT) - 1), best=start)
    again = evaluate_fixed(cm, s, 8, warm=primed)
    assert again.solver_status == "OPTIMAL" and again.estimate.step_time_s == pytest.approx(best, rel=1e-9)


def test_squeezing_forces_recompute_somewhere(prof):
    """The squeezed cases above really bind: the exact plan recomputes."""
    s = parse_layout("tp1-pp2-dp2-mbs1", prof, 4, 8)
    exact = evaluate_fixed(_squeezed(prof, s, 0.7), s, 8)
    assert exact.estimate is not None and exact.estimate.feasible
    assert any(r != "none" for r in exact.strategy.recompute)
    loose = evaluate_fixed(_squeezed(prof, s, 1.5), s, 8)
    assert set(loose.strategy.recompute) == {"none"}


def test_water_filling_closed_form_fills_exactly():
    """The interleaved bound's T: the ranks' shares max(0, (T - r w_min) / n) add up to W exactly."""
    import random
    from planner.search.bounds import _fill_and_work
    rng = random.Random(7)
    for _ in range(500):
        w, n, pp = rng.uniform(0.1, 100), rng.randint(1, 64), rng.randint(1, 64)
        w_min = rng.uniform(0, w / rng.randint(1, 100))
        t = _fill_and_work(w, n, pp, w_min)
        assert sum(max(0.0, (t - r * w_min) / n) for r in range(pp)) == pytest.approx(w, rel=1e-9)


def test_mixed_floor_is_the_best_mix_of_two_in_flight_vectors():
    """`_mixed_floor` against a dense grid over t for every pair: never below any mix the grid sees,
    and above the grid's best by no more than the grid's step allows (the least entry of a mix moves
    at most max |u_i - w_i| per unit of t)."""
    import random
    from planner.search.floor import _mixed_floor
    rng = random.Random(3)
    steps = 2000
    for _ in range(200):
        d, count = rng.randint(2, 4), rng.randint(1, 6)
        vectors = tuple(tuple(rng.randint(0, 30) for _ in range(d)) for _ in range(count))
        k = _mixed_floor(vectors)
        grid, slope = 0.0, 0
        for u in vectors:
            for w in vectors:
                slope = max(slope, max(abs(a - b) for a, b in zip(u, w)))
                grid = max(grid, max(min(t / steps * a + (1 - t / steps) * b for a, b in zip(u, w))
                                     for t in range(steps + 1)))
        assert grid <= k + 1e-9
        assert k <= grid + slope / steps + 1e-9


def test_whole_block_recompute_price_matches_every_assignment_of_modes():
    """`_whole_blocks` (counts of full and selective blocks) against every assignment of a mode to each
    block: the least seconds that save at least `need` bytes."""
    import itertools
    import math
    import random
    from planner.search.floor import _whole_blocks
    rng = random.Random(5)
    for _ in range(300):
        b1, b2 = rng.randint(1, 50), rng.randint(1, 100)
        t1, t2 = rng.uniform(0.1, 5), rng.uniform(0.1, 10)
        m, need = rng.randint(0, 5), rng.uniform(-10, 300)
        best = math.inf
        for modes in itertools.product((0, 1, 2), repeat=m):
            saved = sum((0, b1, b2)[x] for x in modes)
            if saved >= need:
                best = min(best, sum((0.0, t1, t2)[x] for x in modes))
        got = _whole_blocks(((b1, t1), (b2, t2)), m, need)
        assert got == pytest.approx(best, rel=1e-12) if math.isfinite(best) else math.isinf(got)
