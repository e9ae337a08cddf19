"""The exact partition: CP-SAT over stage boundaries and recompute, with the simulated step time
brought in as lazily generated path constraints.

The simulated step is a longest-path (max-plus) quantity: every path through the schedule's action
graph - a chain of forwards, backwards and sends that must run one after another - gives a lower
bound `T >= sum(counts x durations) + rank end terms`, linear in the chunk times, and the step time is
the maximum over all paths. The master problem minimises T under the paths found so far (initially
each rank's "fill, then all my work" path, and with 1F1B the paths through the ranks after it), which
is a relaxation: its optimum is a lower bound on the true optimum. Its solution is simulated
(`partition.evaluate`); each rank's longest path is added; the best simulated assignment so far is
kept and the master is asked only for strictly better ones.
When the master proves nothing better exists, the incumbent is optimal under the simulation itself.
Every added path is tight at the assignment that produced it, so no assignment is proposed twice and
the loop ends. Memory and the rank end terms (optimizer, exposed data-parallel time, the allocator's
integer share) are encoded exactly, so a proposed assignment always fits.

Two encodings of the chunk quantities: when all blocks are identical (the usual transformer), a
chunk is three integers (blocks, full, selective) and everything is linear in them; otherwise each
chunk's boundaries and split points index prefix-sum and range-maximum tables (element constraints).
One worker with a fixed seed, and limits counted in work (`budget.py`: CP-SAT's deterministic time,
rounds, simulated actions) rather than seconds: the answer does not depend on the machine's load or
core count.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Callable

from ortools.sat.python import cp_model

from planner.cost.schedule import in_flight
from planner.search.budget import WORK_PER_ACTION, WORK_PER_DETERMINISTIC_S, WORK_PER_ROUND, Budget
from planner.cost.terms import ALLOCATOR_DIVISOR
from planner.search.partition import FULL, NONE, SELECTIVE, Problem, Solution, evaluate

__all__ = ["solve"]


def _prefix(values) -> list[int]:
    return list(itertools.accumulate(values, initial=0))


class _Chunks:
    """Per chunk, linear expressions of its quantities in the CP-SAT variables of one encoding."""

    def __init__(self, p: Problem, m: cp_model.CpModel):
        self.p, self.m = p, m
        self.blocks, self.full, self.sel = [], [], []
        self.q: dict[str, list] = {k: [] for k in ("fwd", "bwd", "act", "static", "send", "buffer", "opt", "sync",
                                                   "gather", "first")}
        self.transient, self.comm = [], []
        """Per chunk: a variable at least its transient bytes; its largest layer's comm buffer (expr)."""

    def limits(self, blocks, full, sel) -> None:
        m, p = self.m, self.p
        m.add(full + sel <= blocks)
        if p.recompute == "none":
            m.add(full == 0)
            m.add(sel == 0)
        elif p.recompute == "selective":
            m.add(full == 0)
            m.add(sel == blocks)
        elif p.recompute == "full":
            m.add(full == blocks)

    def _at_least(self, var, nonzero, value: int, bound: int) -> None:
        """var >= value whenever `nonzero` (a count between 0 and `bound`) is positive."""
        if value <= 0:
            return
        y = self.m.new_bool_var("")
        self.m.add(nonzero <= bound * y)
        self.m.add(var >= value * y)

    def uniform(self) -> None:
        p, m = self.p, self.m
        total = sum(p.is_block)
        b = p.is_block.index(True)
        head, tail = list(range(p.lead)), list(range(p.layers - p.tail, p.layers))
        for c in range(p.chunks):  # fixed bounds take the general encoding
            n = m.new_int_var(1, total, f"n{c}")
            f, g = m.new_int_var(0, total, f"f{c}"), m.new_int_var(0, total, f"g{c}")
            self.limits(n, f, g)
            edge = (head if c == 0 else []) + (tail if c == p.chunks - 1 else [])
            last = p.layers - 1 if c == p.chunks - 1 else b
            q = self.q
            q["fwd"].append(p.fwd[b] * n + sum(p.fwd[i] for i in edge))
            bw = p.bwd[b]
            q["bwd"].append(bw[NONE] * n + (bw[FULL] - bw[NONE]) * f + (bw[SELECTIVE] - bw[NONE]) * g
                            + sum(p.bwd[i][NONE] for i in edge))
            a = p.act[b]
            q["act"].append(a[NONE] * n + (a[FULL] - a[NONE]) * f + (a[SELECTIVE] - a[NONE]) * g
                            + sum(p.act[i][NONE] for i in edge))
            for key, vec in (("static", p.static), ("opt", p.opt), ("sync", p.sync), ("gather", p.gather)):
                q[key].append(vec[b] * n + sum(vec[i] for i in edge))
            q["send"].append(p.send[c][last] if p.send and c < p.chunks - 1 else 0)
            q["buffer"].append(2 * p.out[last] if p.pp > 1 else 0)
            first = 0 if c == 0 and p.lead else b
            q["first"].append(p.sync[first] + p.gather[first])
            tr = m.new_int_var(0, max(max(x) for x in p.transient), f"tr{c}")
            for i in edge:
                m.add(tr >= p.transient[i][NONE])
            self._at_least(tr, f, p.transient[b][FULL], total)
            self._at_least(tr, g, p.transient[b][SELECTIVE], total)
            self._at_least(tr, n - f - g, p.transient[b][NONE], total)
            self.transient.append(tr)
            self.comm.append(max(p.comm_buffer[i] for i in [b, *edge]))
            self.blocks.append(n)
            self.full.append(f)
            self.sel.append(g)
        m.add(sum(self.blocks) == total)

    def general(self) -> None:
        """Chunk c is [cut_c, cut_c+1), split at j1 <= j2 into full | selective | none."""
        p, m = self.p, self.m
        L, C = p.layers, p.chunks
        pb = _prefix(int(x) for x in p.is_block)
        if p.fixed_bounds:
            cut = [m.new_constant(v) for v in _prefix(p.fixed_bounds)]
        else:
            cut = [m.new_constant(0)] + [m.new_int_var(0, L, f"cut{c}") for c in range(1, C)] + [m.new_constant(L)]
            if C > 1:  # the prefix stays on the first chunk, the suffix on the last
                m.add(cut[1] >= p.lead + 1)
                m.add(cut[C - 1] <= L - p.tail - 1)
        modes = (FULL, SELECTIVE, NONE)
        tables = {key: [_prefix(v[k] for v in vec) for k in range(3)] for key, vec in (("bwd", p.bwd), ("act", p.act))}
        sums = {key: _prefix(vec) for key, vec in (("fwd", p.fwd), ("static", p.static), ("opt", p.opt),
                                                   ("sync", p.sync), ("gather", p.gather))}
        rmax = {k: _range_max([t[k] for t in p.transient], L) for k in modes}
        comm = _range_max(p.comm_buffer, L)
        first = [p.sync[i] + p.gather[i] for i in range(L)] + [0]
        for c in range(C):
            a, e = cut[c], cut[c + 1]
            j1, j2 = m.new_int_var(0, L, f"j1_{c}"), m.new_int_var(0, L, f"j2_{c}")
            m.add(a <= j1)
            m.add(j1 <= j2)
            m.add(j2 <= e)
            at = self._at
            ba, b1, b2, be = (at(pb, x) for x in (a, j1, j2, e))
            n, f, g = be - ba, b1 - ba, b2 - b1
            m.add(n >= 1)
            self.limits(n, f, g)
            seg = ((a, j1, FULL), (j1, j2, SELECTIVE), (j2, e, NONE))
            for key, tab in tables.items():
                self.q[key].append(sum(at(tab[k], y) - at(tab[k], x) for x, y, k in seg))
            for key, tab in sums.items():
                self.q[key].append(at(tab, e) - at(tab, a))
            self.q["send"].append(at([0, *p.send[c]], e) if p.send and c < C - 1 else 0)
            self.q["buffer"].append(at([0, *(2 * o for o in p.out)], e) if p.pp > 1 else 0)
            self.q["first"].append(at(first, a))
            tr = m.new_int_var(0, max(max(x) for x in p.transient), f"tr{c}")
            for x, y, k in seg:
                m.add(tr >= self._at2(rmax[k], x, y, L))
            self.transient.append(tr)
            self.comm.append(self._at2(comm, a, e, L))
            self.blocks.append(n)
            self.full.append(f)
            self.sel.append(g)
        self.cut = cut

    def _at(self, table: list[int], index):
        v = self.m.new_int_var(min(table), max(table), "")
        self.m.add_element(index, table, v)
        return v

    def _at2(self, table: list[int], a, e, L: int):
        idx = self.m.new_int_var(0, (L + 1) ** 2 - 1, "")
        self.m.add(idx == a * (L + 1) + e)
        return self._at(table, idx)


def _range_max(values, L: int) -> list[int]:
    """Flattened (L+1) x (L+1) table: entry a*(L+1)+e is max(values[a:e]), 0 when empty."""
    out = [0] * (L + 1) ** 2
    for a in range(L):
        best = 0
        for e in range(a + 1, L + 1):
            best = max(best, values[e - 1])
            out[a * (L + 1) + e] = best
    return out


class _Master:
    """The master problem: memory exact, the step time as max over the paths added so far."""

    def __init__(self, p: Problem, orders, vectors):
        self.p, self.m = p, cp_model.CpModel()
        self.x = _Chunks(p, self.m)
        if p.uniform() and not p.fixed_bounds:
            self.x.uniform()
        else:
            self.x.general()
        q = self.x.q
        horizon = _horizon(p)
        self.T = self.m.new_int_var(0, horizon, "T")
        self.extra = []
        D = ALLOCATOR_DIVISOR
        for r in range(p.pp):
            mine = list(range(r, p.chunks, p.pp))
            tr = self.m.new_int_var(0, max(max(x) for x in p.transient), f"rt{r}")
            comm = self.m.new_int_var(0, max(p.comm_buffer) if p.comm_buffer else 0, f"cb{r}")
            for c in mine:
                self.m.add(tr >= self.x.transient[c])
                self.m.add(comm >= self.x.comm[c])
            fixed = sum(q["static"][c] + q["buffer"][c] for c in mine) + comm + tr
            for vec in vectors[r]:
                act = sum(k * q["act"][c] for k, c in zip(vec, mine))
                self.m.add(D * (fixed + act) + act + tr <= D * p.cap[r] + D - 1)
            self.extra.append(self._rank_extra(mine, horizon))
        self.paths = 0

    def _rank_extra(self, mine: list[int], horizon: int):
        """The rank's optimizer step + exposed data-parallel time, as an expression whose minimum under
        `T >= ...` is exact (maxima as variables bounded below by each term)."""
        p, m, q, dpm = self.p, self.m, self.x.q, self.p.dp
        opt = sum(q["opt"][c] for c in mine)
        sync, gather = sum(q["sync"][c] for c in mine), sum(q["gather"][c] for c in mine)
        last_bwd = q["bwd"][mine[0]]
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
        m.add(u1 >= gather - sum(q["fwd"][c] for c in mine))
        m.add(u2 >= bwd_comm - n * sum(q["bwd"][c] for c in mine))
        m.add(u2 >= sync - last_bwd)
        return opt + u1 + u2 + q["first"][mine[0]]

    def add_path(self, r: int, counts: Counter) -> None:
        q = self.x.q
        key = {"F": "fwd", "B": "bwd", "S": "send"}
        self.m.add(self.T >= sum(n * q[key[k]][c] for (k, c), n in sorted(counts.items())) + self.extra[r])
        self.paths += 1

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


def _seed_paths(p: Problem, orders) -> list[tuple[int, Counter]]:
    """Each rank's first forward waits for micro-batch 0 through the chunks before it; then the rank
    runs all its actions (and, with one chunk per rank, rank 0's last backward waits for the last
    micro-batch's backwards through the ranks after it)."""
    out = []
    for r in range(p.pp):
        own: Counter = Counter()
        for c in range(r):
            own[("F", c)] += 1
            own[("S", c)] += 1
        for c, k, _ in orders[r]:
            own[(k, c)] += 1
        out.append((r, own))
        if p.vpp == 1 and r > 0:
            down = Counter(own)
            for c in range(r):
                down[("B", c)] += 1
                down[("S", c)] += 1
            out.append((0, down))
    return out + (_through_paths(p, orders) if p.vpp == 1 else [])


def _through_paths(p: Problem, orders) -> list[tuple[int, Counter]]:
    """Rank r's first backward B(c0, m) waits for micro-batch m's forward through every chunk and its
    backward back down to chunk c0 + 1; from there rank r runs the rest of its order, and its last
    backward returns through the chunks below it to rank 0. These paths carry the chunks after r (the
    pipeline's fill and drain, which the seed paths lack). Valid for any order, used with one chunk per
    rank: with interleaving they made the master larger without making the search better (GPT-3 13B on
    8x4 at a 30-unit limit: 12.24 s/step, gap 2.5%, against 12.16 s, 0.7% without them)."""
    out = []
    for r, order in enumerate(orders):
        i0 = next(i for i, a in enumerate(order) if a[1] == "B")
        c0 = order[i0][0]
        counts: Counter = Counter()
        for c in range(p.chunks):
            counts[("F", c)] += 1
            if c > c0:
                counts[("B", c)] += 1
            if c < p.chunks - 1:
                counts[("S", c)] += 2 if c >= c0 else 1
        for c, k, _ in order[i0:]:
            counts[(k, c)] += 1
        out.append((r, Counter(counts)))
        last = order[-1][0]
        for c in range(last):
            counts[("B", c)] += 1
            counts[("S", c)] += 1
        out.append((0, counts))
    return out


def solve(p: Problem, time_limit: float = 10.0, cutoff: int | None = None,
          tick: Callable[[], None] | None = None, budget: Budget | None = None) -> Solution | None:
    """The assignment with the least simulated step time (None if nothing fits). Status OPTIMAL when
    proved; TIME_LIMIT with the gap to the master's bound when the work limit (`time_limit` units, or
    `budget`, see budget.py) ran out first;
    CUTOFF (no assignment, `objective` = the proved bound) when nothing can be below `cutoff`.
    `tick` is called after every round (progress reports)."""
    t0 = time.perf_counter()
    orders = p.orders()
    vectors = [in_flight(o, p.vpp, p.pp) for o in orders]
    master = _Master(p, orders, vectors)
    for r, counts in _seed_paths(p, orders):
        master.add_path(r, counts)
    master.m.minimize(master.T)
    if cutoff is not None:
        master.m.add(master.T <= cutoff - 1)
    best: Solution | None = None
    bound, rounds = 0, 0
    status_name = "OPTIMAL"
    budget = budget or Budget(time_limit)
    actions = sum(len(o) for o in orders)
    budget.spend(WORK_PER_ACTION * actions)  # the orders, in-flight counts and seed paths built above
    while True:
        if budget.spent():
            status_name = "TIME_LIMIT"
            break
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        solver.parameters.random_seed = 0
        solver.parameters.max_deterministic_time = max(budget.left() - WORK_PER_ROUND, 1e-3) / WORK_PER_DETERMINISTIC_S
        solver.parameters.max_time_in_seconds = max(budget.wall_left(), 1e-3)
        status = solver.solve(master.m)
        budget.spend(WORK_PER_ROUND + WORK_PER_DETERMINISTIC_S * solver.deterministic_time)
        rounds += 1
        if tick:
            tick()
        if status == cp_model.INFEASIBLE:
            break  # nothing fits, or nothing beats the incumbent (or the cutoff)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            status_name = "TIME_LIMIT"
            break
        bound = max(bound, int(solver.best_objective_bound))
        bounds, full, sel = master.values(solver, p)
        score = evaluate(p, bounds, full, sel, orders, vectors, paths=True)
        budget.spend(WORK_PER_ACTION * actions)
        if not score.fits:
            raise AssertionError("the master's memory model disagrees with evaluate()")
        if best is None or score.objective < best.objective:
            best = Solution(bounds, full, sel, score.objective)
            master.m.add(master.T <= best.objective - 1)
        if status == cp_model.OPTIMAL and bound >= best.objective:
            break
        for r in range(p.pp):
            master.add_path(r, score.paths[r])
        master.m.clear_hints()
        _hint(master, best, p)
    if best is None:  # no assignment: unresolved (bound known), none below the cutoff, or none fits
        if status_name == "TIME_LIMIT":
            return Solution((), (), (), bound, "UNRESOLVED")
        return Solution((), (), (), cutoff, "CUTOFF") if cutoff is not None else None
    gap = 0.0 if status_name == "OPTIMAL" else max(0.0, (best.objective - bound) / max(best.objective, 1))
    return Solution(best.bounds, best.full, best.selective, best.objective, status_name, gap,
                    {"rounds": rounds, "paths": master.paths, "wall_s": time.perf_counter() - t0})


def _hint(master: _Master, best: Solution, p: Problem) -> None:
    x = master.x
    if hasattr(x, "cut"):
        return
    starts = _prefix(best.bounds)
    for c in range(p.chunks):
        master.m.add_hint(x.blocks[c], sum(p.is_block[starts[c]:starts[c + 1]]))
        master.m.add_hint(x.full[c], best.full[c])
        master.m.add_hint(x.sel[c], best.selective[c])
