"""Local search (`local.py`) against brute force's own enumeration of the assignments and against the
simulation: every neighbour is an assignment brute force would visit, the paths' floor never exceeds
a neighbour's simulated step (so skipping on it loses nothing), and what it returns is an exact, fitting
assignment no neighbour of which is faster."""
import itertools
import random
from dataclasses import replace

import pytest

from planner.cost.schedule import in_flight
from planner.search.budget import Budget
from planner.search.local import _Parts, _Pricer, improve, neighbours
from planner.search.partition import Solution, brute_force, choices, evaluate, _compositions
from planner.search.paths import pool, seed_paths

from instances import instance


def _space(p):
    """Every assignment brute force visits (`partition._compositions` x `choices`), totals respected."""
    out = set()
    for bounds in _compositions(p):
        starts = list(itertools.accumulate(bounds, initial=0))
        blocks = [sum(p.is_block[starts[c]:starts[c + 1]]) for c in range(p.chunks)]
        if p.totals and tuple(sum(blocks[r::p.pp]) for r in range(p.pp)) != p.totals:
            continue
        for choice in itertools.product(*(choices(p, n) for n in blocks)):
            out.add((tuple(bounds), tuple(x[0] for x in choice), tuple(x[1] for x in choice)))
    return out


def _fitting(p, space, orders, vectors):
    return sorted(a for a in space if evaluate(p, *a, orders, vectors).fits)


@pytest.mark.parametrize("uniform", [False, True])
def test_every_neighbour_is_in_brute_forces_space(uniform):
    """For uneven layers, fixed and free recompute and fixed totals, each neighbour is an assignment
    brute force enumerates; and a move reaches more than one other assignment."""
    rng = random.Random(31 + uniform)
    seen = 0
    for _ in range(10):
        p = instance(rng, uniform)
        if uniform and rng.random() < 0.5:
            blocks = sum(p.is_block)
            p = replace(p, totals=tuple(blocks // p.pp + (r < blocks % p.pp) for r in range(p.pp)))
        space = _space(p)
        for a in sorted(space)[:: max(1, len(space) // 20)]:
            near = list(neighbours(p, *a))
            assert set(near) <= space, (p.recompute, p.totals, a, set(near) - space)
            assert a not in near
            seen += len(set(near))
    assert seen > 100


def test_the_paths_floor_never_exceeds_the_simulated_step():
    """The floor a neighbour is skipped on (seed paths and the critical paths of other assignments,
    each with its rank's end terms) is at most its simulated step: skipping loses no faster one."""
    rng = random.Random(7)
    checked = 0
    for _ in range(8):
        p = instance(rng, rng.random() < 0.5)
        orders = p.orders()
        vectors = [in_flight(o, p.vpp, p.pp) for o in orders]
        paths = pool(seed_paths(p.pp, p.vpp, p.micro_batches, orders))
        space = sorted(_space(p))
        pricer = _Pricer(p, paths)
        for a in rng.sample(space, min(6, len(space))):
            pricer.add(evaluate(p, *a, orders, vectors, paths=True).paths)
        parts = _Parts(p)
        for a in rng.sample(space, min(40, len(space))):
            floor, exact = pricer.floor(parts(*a)), evaluate(p, *a, orders, vectors).objective
            assert floor <= exact
            checked += 1
        assert max(pricer.floor(parts(*a)) / evaluate(p, *a, orders, vectors).objective for a in space[:20]) > 0.5
    assert checked > 200


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_improve_ends_at_a_local_optimum_of_the_simulated_step(schedule):
    """From the slowest fitting assignment, `improve` returns a fitting assignment with its exact step,
    no slower than the start, none of whose fitting neighbours is faster (each simulated here, no
    floor); it reaches brute force's optimum on some instances and moves on every one that is not
    already optimal."""
    rng = random.Random(3 + len(schedule))
    optimal = moved = 0
    for _ in range(8):
        p = instance(rng, rng.random() < 0.5, schedule)
        orders = p.orders()
        vectors = [in_flight(o, p.vpp, p.pp) for o in orders]
        fitting = _fitting(p, _space(p), orders, vectors)
        if not fitting:
            continue
        start = max(fitting, key=lambda a: (evaluate(p, *a, orders, vectors).objective, a))
        first = Solution(*start, evaluate(p, *start, orders, vectors).objective, "HEURISTIC")
        paths = pool(seed_paths(p.pp, p.vpp, p.micro_batches, orders))
        out, found = improve(p, first, orders, vectors, paths, Budget(1e9))
        score = evaluate(p, out.bounds, out.full, out.selective, orders, vectors)
        assert score.fits and score.objective == out.objective <= first.objective
        assert len(found) == 0 if out.objective == first.objective else len(found) >= 1
        for a in neighbours(p, out.bounds, out.full, out.selective):
            s = evaluate(p, *a, orders, vectors)
            assert not s.fits or s.objective >= out.objective
        best = brute_force(p)
        optimal += out.objective == best.objective
        moved += out.objective < first.objective or first.objective == best.objective
    assert optimal >= 2 and moved >= 6


def test_improve_stops_when_its_budget_does():
    """No budget: the incumbent comes back as it was, nothing simulated."""
    p = instance(random.Random(2), True, "interleaved")
    orders = p.orders()
    vectors = [in_flight(o, p.vpp, p.pp) for o in orders]
    start = min(_fitting(p, _space(p), orders, vectors))
    first = Solution(*start, evaluate(p, *start, orders, vectors).objective)
    out, found = improve(p, first, orders, vectors, {}, Budget(0.0))
    assert out == first and found == []


def test_a_polished_plan_is_no_slower_and_never_beats_the_proved_optimum():
    """`pricing.polished` on tiny GPT's and tiny Llama's interleaved layouts on 4 GPUs: from the even
    split with full recompute everywhere it returns a plan that fits, is no slower (faster on at least
    one), and is never faster than the solver's proved optimum of the same layout; from that optimum it
    finds nothing faster."""
    import planner
    from planner.cluster.graph import parse_gpus
    from planner.cost.model import CostModel, even_split
    from planner.search.pricing import Candidate, evaluate_fixed, polished
    from planner.search.space import Constraints, skeletons
    from conftest import example

    faster = checked = 0
    for ref in ("gpt.py:tiny", "llama.py:tiny"):
        prof = planner.profile(example(ref), micro_batch=1, dtype="float32")
        cm = CostModel(prof, parse_gpus("4", "a100-80gb")[0])
        for s in [s for s in skeletons(cm, Constraints(global_batch=16, max_vpp=2), 16, {}) if s.vpp > 1][:6]:
            best = evaluate_fixed(cm, s, 16)
            if best.estimate is None or best.solver_status != "OPTIMAL":
                continue
            bad = replace(s, layers_per_chunk=even_split(cm.profile, s.chunks), recompute=("full",) * s.chunks)
            start = Candidate(bad, cm.estimate(bad, 16), 0.0, "HEURISTIC")
            if not start.estimate.feasible:
                continue
            out = polished(cm, start, 16, Budget(1e9))
            assert out.estimate.feasible
            assert out.estimate.step_time_s <= start.estimate.step_time_s
            assert out.estimate.step_time_s >= best.estimate.step_time_s * (1 - 1e-9)
            faster += out.estimate.step_time_s < start.estimate.step_time_s
            again = polished(cm, best, 16, Budget(1e9))
            assert again.estimate.step_time_s == pytest.approx(best.estimate.step_time_s, rel=1e-12)
            checked += 1
    assert checked >= 4 and faster >= 1
