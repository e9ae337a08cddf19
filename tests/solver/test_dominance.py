"""Dominance (`dominance.dominates`) against the reference objective: where it says a variant is
dominated, every assignment that fits the variant fits the other, no slower (`partition.evaluate`,
the simulated step, over every assignment brute force enumerates); and the search that skips
dominated variants still equals exhaustive evaluation (`test_search.test_search_equals_exhaustive`)."""
import itertools
import random
from dataclasses import replace

import pytest

from planner.cost.schedule import in_flight
from planner.search.dominance import dominates
from planner.search.partition import Problem, _compositions, choices, evaluate

from instances import instance

FIELDS = ("send", "act", "transient", "static", "out", "comm_buffer", "opt", "sync", "gather", "cap", "fwd", "bwd")


def _nudge(x, d: int):
    """x with every number moved by d (tuples nested to any depth), never below 0."""
    if isinstance(x, tuple):
        return tuple(_nudge(u, d) for u in x)
    return max(0, x + d)


def _variant(p: Problem, rng: random.Random) -> Problem:
    """`p` with one to three of its terms moved up or down, and perhaps its ZeRO 3 flag or DP latency."""
    changes = {}
    for name in rng.sample(FIELDS, rng.randint(1, 3)):
        changes[name] = _nudge(getattr(p, name), rng.choice((-3, -1, 1, 3, 20)))
    dp = p.dp
    if rng.random() < 0.7 and dp.kind == "fsdp":
        dp = replace(dp, zero3=not dp.zero3)
    if rng.random() < 0.3:
        dp = replace(dp, fixed=max(0, dp.fixed + rng.choice((-2, 2))))
    return replace(p, dp=dp, **changes)


def _assignments(p: Problem):
    for bounds in _compositions(p):
        for choice in itertools.product(*(choices(p, n) for n in p.blocks_of(bounds))):
            yield bounds, tuple(c[0] for c in choice), tuple(c[1] for c in choice)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_a_dominated_variant_is_never_faster_and_never_fits_where_the_other_does_not(schedule):
    rng = random.Random(["gpipe", "1f1b", "interleaved"].index(schedule))
    said, differed = 0, 0
    for _ in range(80):
        a = instance(rng, rng.random() < 0.5, schedule)
        b = _variant(a, rng)
        if not dominates(a, b):
            continue
        said += 1
        orders = a.orders()
        vectors = [in_flight(o, a.vpp, a.pp) for o in orders]
        for bounds, full, sel in _assignments(a):
            x, y = evaluate(a, bounds, full, sel, orders, vectors), evaluate(b, bounds, full, sel, orders, vectors)
            assert y.objective >= x.objective and (x.fits or not y.fits)
            differed += y.objective > x.objective or x.fits != y.fits
    assert said >= 8 and differed > 0  # it must say yes often, on variants that differ


def test_compute_and_a_larger_cap_break_dominance():
    """Compute must be equal (the exposed data-parallel time falls as compute grows) and the dominated
    variant may not have more memory to spend."""
    p = instance(random.Random(7), True, "1f1b")
    assert dominates(p, p)
    assert not dominates(p, replace(p, fwd=_nudge(p.fwd, 1)))
    assert not dominates(p, replace(p, fwd=_nudge(p.fwd, -1)))
    assert not dominates(p, replace(p, cap=_nudge(p.cap, 1)))
    assert dominates(p, replace(p, cap=_nudge(p.cap, -1)))
    assert not dominates(replace(p, static=_nudge(p.static, 1)), p)


def test_zero3_is_dominated_by_zero2_only_that_way_round():
    """ZeRO 3 adds every micro-batch's gathers to the backward's collectives: with gathers large enough to
    show, some assignment is slower with it and none is faster (the simulated step), and dominance goes
    that way only."""
    rng = random.Random(3)
    p = next(q for q in (instance(rng, True, "1f1b") for _ in range(200)) if q.dp.kind == "fsdp")
    p = replace(p, gather=tuple(30 * g + 30 for g in p.gather))
    two, three = replace(p, dp=replace(p.dp, zero3=False)), replace(p, dp=replace(p.dp, zero3=True))
    assert dominates(two, three) and not dominates(three, two)
    orders = p.orders()
    vectors = [in_flight(o, p.vpp, p.pp) for o in orders]
    slower = 0
    for bounds, full, sel in _assignments(p):
        x, y = evaluate(two, bounds, full, sel, orders, vectors), evaluate(three, bounds, full, sel, orders, vectors)
        assert y.objective >= x.objective
        slower += y.objective > x.objective
    assert slower > 0
