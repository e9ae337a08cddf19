"""CP-SAT's partition against brute force on random instances (uneven and uniform layer costs)."""
import random

import pytest

from planner.search.partition import Problem, brute_force, evaluate, solve
from planner.cost.schedule import in_flight, rank_orders


def _instance(rng: random.Random, uniform: bool) -> Problem:
    pp = rng.randint(2, 4)
    vpp = 2 if pp == 2 and rng.random() < 0.4 else 1
    if pp == 2 and vpp == 1 and rng.random() < 0.3:
        pp = rng.choice([5, 6])  # deep pipelines, few blocks
    chunks = pp * vpp
    blocks = rng.randint(chunks, chunks + (1 if chunks > 4 else 2 if chunks > 2 else 3))
    kinds = [False] + [True] * blocks + [False]
    work, act, static, block = [], [], [], None
    for is_block in kinds:
        base = rng.randint(5, 40)
        if is_block:
            if block is None or not uniform:
                a = rng.randint(20, 60)
                block = ((base, base + rng.randint(1, 5), base + rng.randint(6, 25)), (a, a * 2 // 3, a // 6),
                         rng.randint(10, 50))
            work.append(block[0]); act.append(block[1]); static.append(block[2])
        else:
            a = rng.randint(1, 30)
            work.append((base,) * 3); act.append((a,) * 3); static.append(rng.randint(10, 50))
    n = rng.choice([pp, 2 * pp]) if vpp == 1 else 2 * pp
    schedule = "interleaved" if vpp > 1 else rng.choice(["1f1b", "gpipe"])
    orders = rank_orders(schedule, pp, vpp, n)
    send = rng.randint(0, 3)
    return Problem(work=tuple(work), act=tuple(act), static=tuple(static), is_block=tuple(kinds), pp=pp, vpp=vpp,
                   micro_batches=n, in_flight=tuple(tuple(in_flight(orders[r], vpp, pp)) for r in range(pp)),
                   cap=tuple(rng.randint(250, 700) for _ in range(pp)),
                   send=tuple(tuple(0 if c == chunks - 1 else send for _ in kinds) for c in range(chunks)))


@pytest.mark.parametrize("uniform", [False, True])
def test_cpsat_equals_brute_force(uniform):
    rng = random.Random(7 if uniform else 3)
    feasible = 0
    for _ in range(30):
        p = _instance(rng, uniform)
        assert p.uniform() == uniform  # the non-uniform tier really has blocks that differ
        exact, got = brute_force(p), solve(p)
        assert (exact is None) == (got is None)
        if exact is None:
            continue
        feasible += 1
        assert got.status == "OPTIMAL"
        assert got.objective == exact.objective
        obj, fits = evaluate(p, got.bounds, got.full, got.selective)
        assert fits and obj == got.objective
        assert sum(got.bounds) == p.layers and all(b >= 1 for b in got.bounds)
    assert feasible >= 25  # the instances must mostly be feasible to test anything


def test_fixed_recompute_and_bounds_are_respected():
    rng = random.Random(11)
    p = _instance(rng, False)
    for mode in ("none", "selective", "full"):
        q = Problem(**{**p.__dict__, "recompute": mode, "cap": (10**6,) * p.pp})
        got = solve(q)
        blocks = [sum(q.is_block[a:a + n]) for a, n in zip([sum(got.bounds[:c]) for c in range(q.chunks)], got.bounds)]
        if mode == "full":
            assert got.full == tuple(blocks)
        elif mode == "selective":
            assert got.selective == tuple(blocks) and not any(got.full)
        else:
            assert not any(got.full) and not any(got.selective)
    bounds = brute_force(Problem(**{**p.__dict__, "cap": (10**6,) * p.pp})).bounds
    q = Problem(**{**p.__dict__, "fixed_bounds": bounds, "cap": (10**6,) * p.pp})
    assert solve(q).bounds == bounds


def test_nothing_fits_gives_none():
    p = _instance(random.Random(5), True)
    assert solve(Problem(**{**p.__dict__, "cap": (1,) * p.pp})) is None
