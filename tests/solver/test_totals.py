"""The search over per-rank block totals (`totals.py`) against brute force over the simulated step time:
it never drops a composition that holds an assignment below the step to beat, the solve that goes
through it returns brute force's optimum with the same statuses as the plain master, and a time limit
leaves a bound that is still true."""
import itertools
import random
from dataclasses import replace

import pytest

from planner.search.budget import Budget
from planner.search.master import Warm
from planner.search.master import solve as plain
from planner.search.partition import brute_force
from planner.search import totals
from planner.search.totals import branches, solve

from instances import instance


def _compositions(p):
    blocks = sum(p.is_block)
    return [t for t in itertools.product(range(p.vpp, blocks + 1), repeat=p.pp) if sum(t) == blocks]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_branches_keep_every_composition_below_the_cut(schedule):
    """Each composition whose best assignment (brute force, totals fixed) is below the cut is a leaf,
    and its leaf bound is at most that best: the pruning is a proof, not a guess. The cut is set just
    above the optimum and at the median composition's best, so that some are pruned and some kept."""
    rng = random.Random(5 + len(schedule))
    kept = pruned = 0
    for _ in range(6):
        p = instance(rng, True, schedule)
        bests = {t: brute_force(replace(p, totals=t)) for t in _compositions(p)}
        values = sorted(s.objective for s in bests.values() if s is not None)
        if not values:
            continue
        for cut in {values[0] + 1, values[len(values) // 2]}:
            leaves = dict((t, b) for b, t in branches(p, cut, Budget(1e9)))
            for t, s in bests.items():
                if s is not None and s.objective < cut:
                    assert t in leaves and leaves[t] <= s.objective, (t, s.objective, leaves.get(t))
                    kept += 1
                else:
                    pruned += t not in leaves
    assert kept >= 8 and pruned >= 8, (kept, pruned)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_solve_through_the_compositions_is_exact(schedule):
    """Told to beat a step above the optimum, the solve (which branches: an interleaved schedule, or a
    warm start that an earlier solve left) returns brute force's optimum, OPTIMAL; told to beat the
    optimum itself, CUTOFF; nothing that fits, nothing below the cutoff."""
    rng = random.Random(11 + len(schedule))
    solved = 0
    for _ in range(8):
        p = instance(rng, True, schedule)
        exact = brute_force(p)
        if exact is None:
            got = solve(p, time_limit=60, cutoff=10 ** 9, warm=Warm(paths=_seed(p)))
            assert got.status == "CUTOFF"
            continue
        warm = Warm(paths=_seed(p))
        got = solve(p, time_limit=60, cutoff=2 * exact.objective + 10, warm=warm)
        assert got.status == "OPTIMAL" and got.objective == exact.objective
        assert warm.leaves is not None  # it did branch
        cut = solve(p, time_limit=60, cutoff=exact.objective, warm=Warm(paths=_seed(p)))
        assert cut.status == "CUTOFF"
        solved += 1
    assert solved >= 5


def _seed(p):
    """The paths an earlier solve of `p` leaves behind (what makes `solve` branch on a 1F1B pipeline)."""
    warm = Warm()
    plain(p, time_limit=60, warm=warm)
    return warm.paths


def test_a_time_limit_leaves_a_true_bound():
    """With too little budget to finish, the answer is TIME_LIMIT or UNRESOLVED, and the bound it
    reports is at most the optimum; solved on from the same warm start, it reaches the optimum."""
    rng = random.Random(3)
    checked = 0
    for _ in range(12):
        p = instance(rng, True, "interleaved")
        exact = brute_force(p)
        if exact is None:
            continue
        warm = Warm(paths=_seed(p))
        got = solve(p, cutoff=3 * exact.objective, budget=Budget(0.005), warm=warm)
        if got.status in ("TIME_LIMIT", "UNRESOLVED"):
            proved = got.objective if got.status == "UNRESOLVED" else got.objective * (1 - got.gap)
            assert proved <= exact.objective + 1e-6
            checked += 1
        again = solve(p, time_limit=60, cutoff=3 * exact.objective, warm=warm)
        assert again.status == "OPTIMAL" and again.objective == exact.objective
    assert checked >= 2


def test_the_path_floors_of_many_compositions_are_charged(monkeypatch):
    """More compositions than MAX_LEAVES are each raised to their path floor (`_floored`); whatever those
    LPs spend is charged to the solve's budget (they had been charged to a share nobody read: Llama 3
    70B and GPT-3 13B candidates ran path floors of 0.3 s charged 0.04)."""
    spent = []
    real = totals.path_floor

    def recorded(p, paths, budget):
        before = budget.used
        out = real(p, paths, budget)
        spent.append(budget.used - before)
        return out
    monkeypatch.setattr(totals, "path_floor", recorded)
    rng = random.Random(7)
    checked = 0
    for _ in range(10):
        p = instance(rng, True, "interleaved")
        leaves = [(0, t) for t in _compositions(p)]
        if len(leaves) < 2:  # `solve` calls it with more than MAX_LEAVES; the charge is per leaf either way
            continue
        spent.clear()
        budget = Budget(1e9)
        totals._floored(p, leaves, 10 ** 12, Warm(), set(), budget)
        assert len(spent) == len(leaves) and sum(spent) > 0
        assert budget.used >= sum(spent) * (1 - 1e-12)
        checked += 1
    assert checked >= 2
