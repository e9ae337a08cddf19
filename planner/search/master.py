"""The exact partition: CP-SAT over stage boundaries and recompute, with the simulated step time
brought in as lazily generated path constraints.

The simulated step is a longest-path (max-plus) quantity: every path through the schedule's action
graph - a chain of forwards, backwards and sends that must run one after another - gives a lower
bound `T >= sum(counts x durations) + rank end terms`, linear in the chunk times, and the step time is
the maximum over all paths. The master problem minimises T under the paths found so far (initially
each rank's "fill, then all my work" path, and with 1F1B its drain and the paths through the ranks
after it), which is a relaxation: its optimum is a lower bound on the true optimum. Its solution is
simulated (`partition.evaluate`); each rank's longest path is added (`paths.critical`); the best
simulated assignment so far is kept and the master is asked only for strictly better ones.
When the master proves nothing better exists, the incumbent is optimal under the simulation itself.
Memory and the rank end terms (optimizer, exposed data-parallel time, the allocator's integer share)
are encoded exactly, so a proposed assignment always fits.

The master counts time in coarse units (`units.unit_of`: about a millionth of a rank's work), each duration
rounded so that every path and end term stays at most its true value (down where it adds, up where
it is subtracted): still a relaxation, and CP-SAT solves it many times faster than at the problem's
own 10 ns. "Better than the incumbent" is `unit x T < best` in true units, so the proof stays exact.
Each proposal is then excluded by a no-good over the chunks its slowest rank's longest path and end
terms read (every assignment that agrees there is no faster), which rounding alone would not do.
Once rounding rather than a missing path lets a proposal through, the master is rebuilt exact (unit
1, every path so far): there every added path is tight at the assignment that produced it. Either
way no assignment is proposed twice and the loop ends.
Encodings: `encoding.py`. One worker with a fixed seed, and limits counted in work (`budget.py`:
CP-SAT's deterministic time, rounds, simulated actions) rather than seconds: the answer does not depend
on the machine's load or core count.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ortools.sat.python import cp_model

from planner.search.budget import WORK_PER_ACTION, WORK_PER_PATH_ACTION, Budget
from planner.cost.terms import ALLOCATOR_DIVISOR
from planner.search.encoding import Chunks
from planner.search.partition import Problem, Solution, evaluate
from planner.search.local import improve
from planner.search.paths import key, pool, seed_paths
from planner.search.rounds import gap_limit, run_round, target
from planner.search.units import coarse, unit_of

__all__ = ["solve", "Warm", "build_master", "answer", "target", "seed_pool"]


@dataclass
class Warm:
    """What a solve learned, so that a later solve of the same problem goes on from it rather than
    start over (the search's deepening pass): every path found (each a valid constraint whatever the
    cutoff), the best assignment, the master's unit and its proved bound. The bound stays valid under a
    later cutoff: an assignment not below the earlier cutoff is not below the bound either. The search
    may set the bound before the first solve (the discrete floor); the master starts from it."""

    paths: dict = field(default_factory=dict)
    best: Solution | None = None
    unit: int = 0
    bound: int = 0
    leaves: dict | None = None
    """Per composition of blocks over the ranks (`totals.py`) still open: its own Warm; None until a
    solve branches (and {} when branching was tried and cost too much)."""
    leaf_cut: int = 0
    """The step the branching was told to beat: its pruning holds for any cutoff not above it."""
    polished: int = 0
    """The objective of the last incumbent `local.improve` started from (not again from the same one)."""
    seeded: bool = False
    """Whether the seed plan was tried for `best` (`Run.prime`, `Run.seed_table`): it is not again."""
    cut: bool = False
    """Whether its path floor (`relax.path_floor`) is done, no cut left (`totals.py`): until then each
    solve takes it further, from the cuts it left in `paths`."""


class _Master:
    """The master problem: memory exact, the step time as max over the paths added so far."""

    def __init__(self, fine: Problem, unit: int, orders, vectors):
        """The master of `fine` with its times in `unit`s (`units.coarse`)."""
        p = coarse(fine, unit)
        self.p, self.m, self.rounded = p, cp_model.CpModel(), unit > 1
        self.unit = unit
        self.x = Chunks(p, self.m)
        if fine.uniform() and not p.fixed_bounds:
            self.x.uniform()
        else:
            self.x.general()
        for r, t in enumerate(p.totals):  # blocks per rank, when the caller fixed them
            self.m.add(sum(self.x.blocks[c] for c in range(r, p.chunks, p.pp)) == t)
        q = self.x.q
        horizon = _horizon(p)
        self.T = self.m.new_int_var(0, horizon, "T")
        self.extra = []
        D = ALLOCATOR_DIVISOR
        for r in range(p.pp):
            mine = list(range(r, p.chunks, p.pp))
            tr = self.m.new_int_var(0, max(max(x) for x in p.transient), f"rt{r}")
            comm = self.m.new_int_var(0, max(p.comm_buffer) if p.comm_buffer else 0, f"cb{r}")
            if hasattr(self.x, "cut"):
                for c in mine:
                    self.m.add(tr >= self.x.transient[c])
            else:
                self.x.rank_transient(tr, mine)
            for c in mine:
                self.m.add(comm >= self.x.comm[c])
            fixed = sum(q["static"][c] + q["buffer"][c] for c in mine) + comm + tr
            for vec in vectors[r]:
                act = sum(k * q["act"][c] for k, c in zip(vec, mine))
                self.m.add(D * (fixed + act) + act + tr <= D * p.cap[r] + D - 1)
            self.extra.append(self._rank_extra(mine, horizon))

    def _rank_extra(self, mine: list[int], horizon: int):
        """The rank's optimizer step + exposed data-parallel time, as an expression whose minimum under
        `T >= ...` is exact (maxima as variables bounded below by each term)."""
        p, m, q, dpm = self.p, self.m, self.x.q, self.p.dp
        opt = sum(q["opt"][c] for c in mine)
        sync, gather = sum(q["sync"][c] for c in mine), sum(q["gather"][c] for c in mine)
        # times subtracted are rounded up: each layer's by at most one unit
        up = self.x.layers if self.rounded else [0] * p.chunks
        last_bwd = q["bwd"][mine[0]] + up[mine[0]]
        if dpm.kind == "none":
            return opt
        if dpm.kind == "ddp_tp":
            return opt + dpm.fixed + sync
        if dpm.kind == "ddp":
            s = m.new_int_var(0, horizon, "")
            m.add(s == sync)
            small = m.new_int_var(0, horizon, "")
            m.add_min_equality(small, [s, int(dpm.bucket)])
            dp = m.new_int_var(0, 2 * horizon, "")
            m.add(dp >= dpm.fixed + sync - last_bwd)
            m.add(dp >= dpm.fixed + small)
            return opt + dp
        n = p.micro_batches
        bwd_comm = n * gather + sync if dpm.zero3 else sync
        u1, u2 = m.new_int_var(0, 2 * horizon, ""), m.new_int_var(0, 2 * horizon, "")
        m.add(u1 >= gather - sum(q["fwd"][c] + up[c] for c in mine))
        m.add(u2 >= bwd_comm - n * sum(q["bwd"][c] + up[c] for c in mine))
        m.add(u2 >= sync - last_bwd)
        return opt + u1 + u2 + q["first"][mine[0]]

    def beat(self, objective: int) -> None:
        """Ask for a step strictly below `objective` (true units: the incumbent's, or the cutoff)."""
        self.m.add(self.unit * self.T <= objective - 1)

    def add_path(self, r: int, counts: Counter) -> None:
        q = self.x.q
        key = {"F": "fwd", "B": "bwd", "S": "send"}
        self.m.add(self.T >= sum(n * q[key[k]][c] for (k, c), n in sorted(counts.items())) + self.extra[r])

    def exclude(self, solver: cp_model.CpSolver, r: int, counts: Counter) -> None:
        """A no-good: the current assignment, and every other that agrees with it on the chunks rank r's
        longest path and end terms read, has that path's length; when that is no better than the
        incumbent, none of them may be proposed again."""
        chunks = sorted({c for _, c in counts} | set(range(r, self.p.chunks, self.p.pp)))
        differs = []
        for v in {id(v): v for c in chunks for v in self.x.own[c]}.values():
            b = self.m.new_bool_var("")
            self.m.add(v != solver.value(v)).only_enforce_if(b)
            differs.append(b)
        self.m.add_bool_or(differs)

    def values(self, solver: cp_model.CpSolver, p: Problem) -> tuple[tuple, tuple, tuple]:
        x = self.x
        full = tuple(solver.value(f) for f in x.full)
        sel = tuple(solver.value(g) for g in x.sel)
        if hasattr(x, "cut"):
            v = [solver.value(c) for c in x.cut]
            return tuple(b - a for a, b in zip(v, v[1:])), full, sel
        bounds = [solver.value(n) for n in x.blocks]
        bounds[0] += p.lead
        bounds[-1] += p.tail
        return tuple(bounds), full, sel


def _horizon(p: Problem) -> int:
    """An upper bound on any assignment's step time: every action in sequence plus every end term."""
    work = sum(p.fwd) + sum(max(b) for b in p.bwd) + sum(max(s, default=0) for s in p.send)
    dp = p.dp
    comm = p.micro_batches * sum(p.gather) + sum(p.sync) + 2 * (max(p.sync, default=0) + max(p.gather, default=0))
    return 2 * p.micro_batches * p.vpp * work + sum(p.opt) + comm + int(dp.fixed) + int(dp.bucket) + 1


def solve(p: Problem, time_limit: float = 10.0, cutoff: int | None = None,
          tick: Callable[[], None] | None = None, budget: Budget | None = None,
          warm: Warm | None = None) -> Solution | None:
    """The assignment with the least simulated step time (None if nothing fits). Status OPTIMAL when
    proved; TIME_LIMIT with the gap to the master's bound when the limit (`time_limit` seconds, or
    `budget`, see budget.py) ran out first;
    CUTOFF (no assignment, `objective` = the proved bound) when nothing can be below `cutoff`: an
    assignment found at or above the cutoff is not returned (only that nothing is below it was proved),
    and a time limit that stops the loop before one below it is found leaves UNRESOLVED.
    `tick` is called after every round (progress reports). The master starts in coarse units and
    turns exact (`unit` 1, every path found so far) once a proposal no better than the incumbent had
    its longest path in it already: from there on rounding, not a missing path, lets proposals through.
    With `warm`, the solve starts from what it holds and leaves there what it learned."""
    t0 = time.perf_counter()
    warm = warm or Warm()
    orders = p.orders()
    vectors = p.vectors()
    paths = warm.paths or seed_pool(p, orders)
    unit = warm.unit or unit_of(p)
    best, bound, rounds = warm.best, warm.bound, 0
    master = build_master(p, unit, orders, vectors, paths, cutoff, best, bound)
    status_name = "OPTIMAL"
    budget = budget or Budget.seconds(time_limit, t0)
    actions = sum(len(o) for o in orders)
    budget.spend(2 * WORK_PER_ACTION * actions)  # the orders, in-flight counts and seed paths built above
    if best is not None:
        best = best if warm.polished == best.objective else _polish(master, p, best, paths, (orders, vectors), budget, cutoff)
        _hint(master, best, p)
    while True:
        if budget.spent():
            status_name = "TIME_LIMIT"
            break
        solver, status, passed = run_round(master, budget, gap_limit(cutoff, best, bound))
        rounds += 1
        if tick:
            tick()
        if status == cp_model.INFEASIBLE:
            break  # nothing fits, or nothing beats the incumbent (or the cutoff)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            status_name = "TIME_LIMIT"
            break
        bound = max(bound, unit * int(solver.best_objective_bound))
        bounds, full, sel = master.values(solver, p)
        score = evaluate(p, bounds, full, sel, orders, vectors, paths=True)
        budget.spend(WORK_PER_PATH_ACTION * actions)
        if not score.fits:
            raise AssertionError("the master's memory model disagrees with evaluate()")
        improved = best is None or score.objective < best.objective
        if improved:
            best = _polish(master, p, Solution(bounds, full, sel, score.objective), paths, (orders, vectors), budget, cutoff)
            master.beat(best.objective)
        if status == cp_model.OPTIMAL and bound >= best.objective:
            break
        exact = _learn(master, solver, score, paths, unit, improved)
        best = _passed(master, p, passed, best, paths, (orders, vectors, actions), budget, add=not exact)
        if exact:
            unit = 1
            master = build_master(p, unit, orders, vectors, paths, cutoff, best, bound)
        master.m.clear_hints()
        _hint(master, best, p)
    warm.paths, warm.best, warm.unit, warm.bound, warm.polished = paths, best, unit, bound, best.objective if best else 0
    return answer(best, bound, status_name, cutoff,
                   {"rounds": rounds, "paths": len(paths), "unit": unit, "wall_s": time.perf_counter() - t0})


def _polish(master: _Master, p: Problem, best: Solution, paths: dict, sim: tuple, budget: Budget,
            cutoff: int | None) -> Solution:
    """The incumbent after local search (`local.improve`, at most LOCAL_SHARE of what is left) where it
    may pay (`_near`), told to the master (a step below it); the paths of each assignment it moved to
    join `paths` and the master."""
    if not _near(p, best, cutoff):
        return best
    share = budget.child(LOCAL_SHARE * budget.left())
    out, found = improve(p, best, *sim, paths, share)
    budget.spend(share.used)
    for per_rank in found:
        for (r, _), counts in _join(paths, per_rank).items():
            master.add_path(r, counts)
    if out.objective < best.objective:
        master.beat(out.objective)
    return out


def _near(p: Problem, best: Solution, cutoff: int | None) -> bool:
    """Whether local search from `best` may pay: an interleaved schedule (with one chunk per rank the
    master's own proposals converge in a few rounds, and a simulation costs more than a round: GPT 1T
    tp8-pp64, 0.2 s each, 5 -> 19 s for the same answer), and no cutoff or one `best` is within
    LOCAL_REACH of."""
    return p.vpp > 1 and (cutoff is None or best.objective < LOCAL_REACH * cutoff)


LOCAL_SHARE = 0.25
"""Of what is left of a solve's budget, what one local search from a new incumbent may use."""
LOCAL_REACH = 1.02
"""Local search starts only from an incumbent less than this much above the cutoff: the master's first
proposals for GPT-3 175B tp4-pp8 v3 (68-75 s/step against 46.13) took 2 s each to bring to 46.2-55,
and the search's answer got worse (46.14)."""


def answer(best: Solution | None, bound: int, status: str, cutoff: int | None, stats: dict) -> Solution | None:
    """What `solve` returns: only an assignment below the cutoff is an answer; without one, UNRESOLVED
    (the proved bound) when the limit stopped the loop, else CUTOFF, or None when nothing fits."""
    if best is not None and cutoff is not None and best.objective >= cutoff:
        best = None
    if best is None:
        if status == "TIME_LIMIT":
            return Solution((), (), (), bound, "UNRESOLVED")
        return Solution((), (), (), cutoff, "CUTOFF") if cutoff is not None else None
    gap = 0.0 if status == "OPTIMAL" else max(0.0, (best.objective - bound) / max(best.objective, 1))
    return Solution(best.bounds, best.full, best.selective, best.objective, status, gap, stats)


def _passed(master: _Master, p: Problem, passed: list, best: Solution, paths: dict, sim: tuple, budget: Budget,
            add: bool) -> Solution:
    """Learn from the assignments a round `passed` before its answer: each is simulated, its longest
    paths join `paths` (and the master, with `add`), one faster than `best` becomes the incumbent. A
    simulation each, where a round costs seconds: GPT-3 13B tp1-pp2-dp16 interleaved v4's proof took 24
    rounds and 14.9 s without them, 8 and 8.8 s with them."""
    orders, vectors, actions = sim
    for bounds, full, sel in passed:
        score = evaluate(p, bounds, full, sel, orders, vectors, paths=True)
        budget.spend(WORK_PER_PATH_ACTION * actions)
        if score.fits and score.objective < best.objective:
            best = Solution(bounds, full, sel, score.objective)
            master.beat(best.objective)
        for (r, _), counts in _join(paths, score.paths).items():
            if add:
                master.add_path(r, counts)
    return best


def _join(paths: dict, per_rank) -> dict:
    """Add each rank's path in `per_rank` that `paths` lacks (keyed by rank and counts); return those."""
    new = {k: c for r, c in enumerate(per_rank) if (k := key(r, c)) not in paths}
    paths.update(new)
    return new


def _learn(master: _Master, solver: cp_model.CpSolver, score, paths: dict, unit: int, improved: bool) -> bool:
    """Add the proposal's longest paths (those not known yet) to `paths` and (unless it returns True) to
    the master, with a no-good when the master is coarse. True: a tie of rounding (the proposal is no better than the
    incumbent and its slowest path was in the master already): the master should turn exact."""
    worst = score.ends.index(score.objective)
    tie = unit > 1 and not improved and key(worst, score.paths[worst]) in paths
    new = _join(paths, score.paths)
    if not tie:
        for (r, _), counts in new.items():
            master.add_path(r, counts)
        if unit > 1:
            master.exclude(solver, worst, score.paths[worst])
    return tie


def build_master(p: Problem, unit: int, orders, vectors, paths: dict, cutoff: int | None,
           best: Solution | None, bound: int = 0) -> _Master:
    """A master in `unit`s with `paths`, asked for a step below the cutoff and the incumbent, and told
    `bound`: no assignment below the cutoff is faster (an earlier solve's proof or the discrete floor,
    `Warm.bound`). T >= bound excludes none of them, and CP-SAT, whose linear relaxation sees
    fractional blocks, no longer has to prove it again (GPT-3 175B tp4-pp8 v2, a master of the second
    round: 8.5 -> 4.0 s to its 0.5% gap, given the floor 44.6 against its LP's 43.7)."""
    master = _Master(p, unit, orders, vectors)
    master.m.add(master.T >= bound // unit)
    for (r, _), counts in paths.items():
        master.add_path(r, counts)
    master.m.minimize(master.T)
    for limit in (cutoff, best.objective if best else None):
        if limit is not None:
            master.beat(limit)
    return master


def seed_pool(p: Problem, orders) -> dict:
    """The paths a master starts from when it has none (`paths.seed_paths`), keyed as `paths.pool` keys them."""
    return pool(seed_paths(p.pp, p.vpp, p.micro_batches, orders))


def _hint(master: _Master, best: Solution, p: Problem) -> None:
    x = master.x
    if hasattr(x, "cut"):
        return
    for c, n in enumerate(p.blocks_of(best.bounds)):
        master.m.add_hint(x.blocks[c], n)
        master.m.add_hint(x.full[c], best.full[c])
        master.m.add_hint(x.sel[c], best.selective[c])
