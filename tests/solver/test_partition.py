"""The partition solver against brute force over the simulated step time (not a proxy of it): random
instances with 2-6 stages, vpp 1-2, all three schedules, uneven and identical layers, every data-
parallel end model, free and fixed recompute."""
import random
from collections import Counter
from dataclasses import replace

import pytest

from planner.search.budget import Budget
from planner.search.master import Warm, solve
from planner.search.units import unit_of
from planner.search.partition import Problem, brute_force, evaluate
from planner.search.relax import lp_floor

from instances import instance


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_solver_equals_brute_force_on_the_simulated_step(uniform, schedule):
    rng = random.Random(10 * uniform + ["gpipe", "1f1b", "interleaved"].index(schedule))
    feasible, kinds = 0, Counter()
    for _ in range(12):
        p = instance(rng, uniform, schedule)
        assert p.uniform() == uniform
        exact, got = brute_force(p), solve(p)
        assert (exact is None) == (got is None)
        if exact is None:
            continue
        feasible += 1
        kinds[p.dp.kind] += 1
        assert got.status == "OPTIMAL" and got.gap == 0
        assert got.objective == exact.objective
        score = evaluate(p, got.bounds, got.full, got.selective)
        assert score.fits and score.objective == got.objective
        assert sum(got.bounds) == p.layers and all(b >= 1 for b in got.bounds)
    assert feasible >= 9  # the instances must mostly be feasible to test anything
    assert len(kinds) >= 3


def _scaled(p: Problem, rng: random.Random, k: int) -> Problem:
    """`p` with every time k times larger plus noise below 1000: real-model magnitudes, where the master
    works in coarse units (`units.unit_of`, 100 or 1000 here) and rounding loses something on every
    time. (Noise as large as k makes almost every assignment's critical path its own: the loop then
    needs hundreds of rounds, before this change as after.)"""

    def t(x: int) -> int:
        return x * k + rng.randrange(1000)
    bwd = []
    for b in p.bwd:  # one noise per layer: a layer outside the blocks keeps one time for every mode
        e = rng.randrange(1000)
        bwd.append(tuple(x * k + e for x in b))
    return replace(p, fwd=tuple(map(t, p.fwd)), bwd=tuple(bwd),
                   send=tuple(tuple(map(t, s)) for s in p.send), opt=tuple(map(t, p.opt)),
                   sync=tuple(map(t, p.sync)), gather=tuple(map(t, p.gather)),
                   dp=replace(p.dp, fixed=t(int(p.dp.fixed)), bucket=t(int(p.dp.bucket))))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_coarse_master_units_keep_the_solver_exact(schedule):
    """With times of real models' size the master counts in coarse units (rounded down, subtracted
    terms up) and excludes rounding ties by no-goods, then turns exact: still brute force's optimum."""
    rng = random.Random(40 + len(schedule))
    coarse = 0
    for i in range(10):
        p = _scaled(instance(rng, i % 2 == 0, schedule), rng, 10**6)
        exact, got = brute_force(p), solve(p, time_limit=60)
        assert (exact is None) == (got is None)
        if exact is None:
            continue
        coarse += unit_of(p) > 1
        assert got.status == "OPTIMAL" and got.objective == exact.objective
    assert coarse >= 6


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_cutoff_answers_only_below_it(schedule):
    """Told to beat brute force's optimum, the solver proves that nothing does (CUTOFF, no assignment,
    even when it met the optimum on the way: that one is not below the cutoff, and was not proved best
    among those at or above it); told to beat it by one unit, it returns the optimum, proved."""
    rng = random.Random(70 + len(schedule))
    checked = 0
    for i in range(8):
        p = instance(rng, i % 2 == 0, schedule)
        exact = brute_force(p)
        if exact is None:
            continue
        checked += 1
        none = solve(p, cutoff=exact.objective)
        assert none.status == "CUTOFF" and none.bounds == () and none.objective == exact.objective
        got = solve(p, cutoff=exact.objective + 1)
        assert got.status == "OPTIMAL" and got.objective == exact.objective
    assert checked >= 5


def _feasible(rng: random.Random, schedule: str):
    """Of 8 instances at real-model magnitudes (`_scaled`), those that fit, with brute force's optimum."""
    for i in range(8):
        p = _scaled(instance(rng, i % 2 == 0, schedule), rng, 10**6)
        exact = brute_force(p)
        if exact is not None:
            yield p, exact


@pytest.mark.parametrize("schedule", ["1f1b", "interleaved"])
def test_a_stopped_solve_goes_on_from_where_it_stopped(schedule):
    """A solve stopped by its budget after a round or two, then solved on with what it learned
    (`master.Warm`: paths, incumbent, unit, bound), ends at brute force's optimum, proved, keeping every
    path it had."""
    resumed = 0
    for p, exact in _feasible(random.Random(90 + len(schedule)), schedule):
        whole = solve(p, time_limit=60)
        warm = Warm()
        first = solve(p, budget=Budget(0.07), warm=warm)
        if first.status == "OPTIMAL":
            continue
        resumed += 1
        assert warm.bound <= exact.objective
        learned = set(warm.paths)
        rest = solve(p, time_limit=60, warm=warm)
        assert rest.status == "OPTIMAL" and rest.objective == exact.objective == whole.objective
        assert learned <= set(warm.paths)
    assert resumed >= 3


@pytest.mark.parametrize("schedule", ["1f1b", "interleaved"])
def test_a_solve_told_a_true_bound_still_ends_at_the_optimum(schedule):
    """The search tells a first solve the discrete floor (`Warm.bound`). Told the optimum itself, the
    tightest true bound there is, the master (coarse units, `bound // unit`) still finds brute force's
    optimum and proves it; told the optimum with a cutoff at it, it proves nothing is below it."""
    told = 0
    for p, exact in _feasible(random.Random(77 + len(schedule)), schedule):
        told += 1
        got = solve(p, time_limit=60, warm=Warm(bound=exact.objective))
        assert got.status == "OPTIMAL" and got.objective == exact.objective
        cut = solve(p, time_limit=60, cutoff=exact.objective, warm=Warm(bound=exact.objective))
        assert cut.status == "CUTOFF"
    assert told >= 5


def test_fixed_recompute_and_bounds_are_respected():
    rng = random.Random(11)
    p = instance(rng, False, "1f1b")
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
    free = Problem(**{**p.__dict__, "cap": (10**6,) * p.pp, "recompute": None})
    bounds = brute_force(free).bounds
    q = Problem(**{**free.__dict__, "fixed_bounds": bounds})
    assert solve(q).bounds == bounds


def test_nothing_fits_gives_none():
    p = instance(random.Random(5), True)
    assert solve(Problem(**{**p.__dict__, "cap": (1,) * p.pp})) is None


def test_a_limit_hit_before_any_assignment_is_unresolved_not_infeasible():
    """None means nothing fits; a wall-clock limit that ends before any assignment says UNRESOLVED."""
    p = instance(random.Random(9), False, "1f1b")
    got = solve(Problem(**{**p.__dict__, "cap": (10**6,) * p.pp}), time_limit=1e-6)
    assert got is not None and got.status == "UNRESOLVED" and got.bounds == ()


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_seed_paths_never_exceed_the_simulated_end(schedule):
    """Every path the master starts from (fill and drain of each round, through) is a chain of actions that run one after
    another, so its length plus its rank's end terms is at most that rank's simulated end, for any
    assignment: a longer one would cut off the optimum."""
    import itertools
    from planner.search.paths import _through_paths, seed_paths
    from planner.search.partition import parts_of, rank_extra
    rng = random.Random(99 + len(schedule))
    checked = 0
    for _ in range(15):
        p = instance(rng, rng.random() < 0.5, schedule)
        orders = p.orders()
        paths = seed_paths(p.pp, p.vpp, p.micro_batches, orders, rounds=True) + _through_paths(orders)  # through paths for every schedule
        blocks = sum(p.is_block)
        for _ in range(6):
            cut = sorted(rng.sample(range(1, blocks), p.chunks - 1))
            sizes = [b - a for a, b in zip((0, *cut), (*cut, blocks))]
            sizes[0] += p.lead
            sizes[-1] += p.tail
            starts = list(itertools.accumulate(sizes, initial=0))
            nb = [sum(p.is_block[a:e]) for a, e in zip(starts, starts[1:])]
            full = tuple(rng.randint(0, n) for n in nb)
            sel = tuple(rng.randint(0, n - f) for n, f in zip(nb, full))
            parts = parts_of(p, tuple(sizes), full, sel)
            ends = evaluate(p, tuple(sizes), full, sel).ends
            value = {"F": lambda c: parts[c].fwd, "B": lambda c: parts[c].bwd, "S": lambda c: parts[c].send}
            for r, counts in paths:
                length = sum(n * value[k](c) for (k, c), n in counts.items())
                assert length + rank_extra(p, parts, r) <= ends[r], (r, counts)
                checked += 1
    assert checked > 100


@pytest.mark.parametrize("schedule", ["1f1b", "interleaved"])
def test_fixed_rank_totals_give_the_best_assignment_with_them(schedule):
    """A branch of the search over per-rank block totals (`Problem.totals`): the solver's answer is
    brute force's best among the assignments with those totals, and the best over every branch is
    the unrestricted optimum."""
    import itertools
    rng = random.Random(77 + len(schedule))
    checked = 0
    for _ in range(4):
        p = instance(rng, rng.random() < 0.5, schedule)
        exact = brute_force(p)
        if exact is None:
            continue
        blocks = sum(p.is_block)
        best = None
        for totals in itertools.product(range(p.vpp, blocks + 1), repeat=p.pp):
            if sum(totals) != blocks:
                continue
            q = replace(p, totals=totals)
            want, got = brute_force(q), solve(q)
            assert (want is None) == (got is None)
            if want is not None:
                assert got.status == "OPTIMAL" and got.objective == want.objective
                best = got.objective if best is None else min(best, got.objective)
                checked += 1
        assert best == exact.objective
    assert checked >= 6


@pytest.mark.parametrize("schedule", ["1f1b", "interleaved"])
def test_a_rank_holds_the_largest_transient_of_the_modes_its_blocks_run_in(schedule):
    """Identical blocks whose transient bytes rank the recompute modes in any order (ties too), with
    transients large against the cap: the master (one step Boolean per rank, `Chunks.rank_transient`)
    and the LP floor against brute force."""
    rng = random.Random(41 + len(schedule))
    feasible, orders = 0, set()
    for _ in range(14):
        p = instance(rng, True, schedule)
        values = [rng.randint(5, 120) for _ in range(3)]
        if rng.random() < 0.3:
            values[rng.randrange(3)] = values[rng.randrange(3)]
        tr = tuple(tuple(values) if b else row for b, row in zip(p.is_block, p.transient))
        p = replace(p, transient=tr, recompute=None)
        exact, got = brute_force(p), solve(p)
        assert (exact is None) == (got is None)
        if exact is None:
            continue
        feasible += 1
        orders.add(tuple(sorted(range(3), key=lambda k: values[k])))
        assert got.status == "OPTIMAL" and got.objective == exact.objective
        assert evaluate(p, got.bounds, got.full, got.selective).fits
        assert lp_floor(p)[0] <= exact.objective
    assert feasible >= 8 and len(orders) >= 3
