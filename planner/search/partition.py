"""Layer-to-stage assignment and per-chunk recomputation with CP-SAT, on plain integers.

The solver sees numbers only (no profile, no cluster), so it is tested against brute force on random
instances. A chunk is a contiguous run of layers; its blocks run, in order, F under full recompute,
then G under selective, the rest with none (which blocks of a chunk carry which mode changes neither
its time nor its memory, so this order loses nothing). Each chunk holds at least one block; the prefix
layers stay on the first chunk and the suffix layers on the last.

Objective (integer time units), with M = the busiest pipeline rank's work per micro-batch, S = the
sum over chunks and C = the largest chunk: for vpp = 1, (n - 1)·M + S (Alpa/DAPPLE's formula for
heterogeneous stages); interleaved, n·M + (pp - 1)·C, which for balanced chunks is torch's
n·W + (pp - 1)·W/vpp. The cost model then times the chosen partition on the schedule's real order.
Memory: for every in-flight vector of a rank (see `schedule.in_flight`), its chunks' state plus
activations x in-flight counts stays within that rank's cap.

Two encodings of the same model: when all blocks cost the same (the usual transformer), a chunk is
three integers (blocks, full, selective) and every quantity is linear in them, which CP-SAT solves in
milliseconds at 64+ stages; otherwise each chunk's boundaries and split points index prefix-sum tables
through element constraints (exact, slower).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

__all__ = ["Problem", "Solution", "solve", "brute_force", "objective", "evaluate"]

NONE, SELECTIVE, FULL = 0, 1, 2
WORKERS = 8
QUICK = 0.05
"""Deterministic seconds one worker gets first: most instances are proved within it, without the
portfolio's thread start-up."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A partition instance in integer units (time units, memory units)."""

    work: tuple[tuple[int, int, int], ...]
    """Per layer: forward + backward time under none / selective / full recompute."""
    act: tuple[tuple[int, int, int], ...]
    """Per layer: saved activation units per micro-batch under each mode."""
    static: tuple[int, ...]
    """Per layer: training-state units (weights, grads, optimizer)."""
    is_block: tuple[bool, ...]
    pp: int
    vpp: int = 1
    micro_batches: int = 1
    in_flight: tuple[tuple[tuple[int, ...], ...], ...] = ()
    """Per rank: the in-flight vectors (one count per local chunk)."""
    cap: tuple[int, ...] = ()
    """Per rank: memory units available to state + activations."""
    send: tuple[tuple[int, ...], ...] = ()
    """Per chunk, per layer index i: time added when the chunk ends after layer i (its send)."""
    recompute: str | None = None
    """None: the solver chooses; else every block runs this mode."""
    fixed_bounds: tuple[int, ...] = ()
    """Layers per chunk, when the user fixed them."""

    @property
    def chunks(self) -> int:
        return self.pp * self.vpp

    @property
    def layers(self) -> int:
        return len(self.work)

    @property
    def lead(self) -> int:
        return self.is_block.index(True) if True in self.is_block else self.layers

    @property
    def tail(self) -> int:
        return list(reversed(self.is_block)).index(True) if True in self.is_block else 0

    def uniform(self) -> bool:
        """All blocks cost the same (time, memory, state, send)."""
        idx = [i for i, b in enumerate(self.is_block) if b]
        keys = {(self.work[i], self.act[i], self.static[i], tuple(s[i] for s in self.send)) for i in idx}
        return len(keys) <= 1


@dataclass(frozen=True)
class Solution:
    bounds: tuple[int, ...]
    """Layers per chunk."""
    full: tuple[int, ...]
    """Per chunk: blocks under full recompute (its first ones)."""
    selective: tuple[int, ...]
    """Per chunk: blocks under selective recompute (the next ones)."""
    objective: int
    status: str = "OPTIMAL"
    gap: float = 0.0
    stats: dict = field(default_factory=dict)


def objective(p: Problem, busiest: int, total: int, largest: int) -> int:
    """vpp = 1: (n - 1)·M + S. Interleaved: n·M + (pp - 1)·C, C the largest chunk (its fill and drain
    pass every rank once per chunk round, so the slowest chunk sets the bubble)."""
    if p.vpp == 1:
        return (p.micro_batches - 1) * busiest + total
    return p.micro_batches * busiest + (p.pp - 1) * largest


def _choices(p: Problem, blocks: int) -> list[tuple[int, int]]:
    if p.recompute == "none":
        return [(0, 0)]
    if p.recompute == "selective":
        return [(0, blocks)]
    if p.recompute == "full":
        return [(blocks, 0)]
    return [(f, g) for f in range(blocks + 1) for g in range(blocks + 1 - f)]


def _chunk(p: Problem, c: int, a: int, e: int, full: int, sel: int) -> tuple[int, int, int]:
    """(work, act, static) of chunk c over layers [a, e) with `full` then `sel` blocks recomputed."""
    w = act = 0
    n = 0
    for i in range(a, e):
        mode = NONE
        if p.is_block[i]:
            mode = FULL if n < full else SELECTIVE if n < full + sel else NONE
            n += 1
        w += p.work[i][mode]
        act += p.act[i][mode]
    send = p.send[c][e - 1] if p.send else 0
    return w + send, act, sum(p.static[a:e])


def evaluate(p: Problem, bounds, full, sel) -> tuple[int, bool]:
    """(objective, fits) of one assignment: the reference both solvers are checked against."""
    starts = list(itertools.accumulate(bounds, initial=0))
    parts = [_chunk(p, c, starts[c], starts[c + 1], full[c], sel[c]) for c in range(p.chunks)]
    return _score(p, parts)


def _score(p: Problem, parts) -> tuple[int, bool]:
    fits = True
    busiest = 0
    for r in range(p.pp):
        mine = list(range(r, p.chunks, p.pp))
        busiest = max(busiest, sum(parts[c][0] for c in mine))
        base = sum(parts[c][2] for c in mine)
        for vec in p.in_flight[r] if p.in_flight else ():
            fits &= base + sum(n * parts[c][1] for n, c in zip(vec, mine)) <= p.cap[r]
    return objective(p, busiest, sum(x[0] for x in parts), max(x[0] for x in parts)), fits


def _compositions(p: Problem):
    if p.fixed_bounds:
        yield tuple(p.fixed_bounds)
        return
    blocks = sum(p.is_block)
    for cut in itertools.combinations(range(1, blocks), p.chunks - 1):
        sizes = [b - a for a, b in zip((0, *cut), (*cut, blocks))]
        sizes[0] += p.lead
        sizes[-1] += p.tail
        yield tuple(sizes)


def brute_force(p: Problem) -> Solution | None:
    """Every composition x every recompute split of every chunk: exponential, for tests."""
    best = None
    for bounds in _compositions(p):
        starts = list(itertools.accumulate(bounds, initial=0))
        options = []
        for c in range(p.chunks):
            a, e = starts[c], starts[c + 1]
            blocks = sum(p.is_block[a:e])
            options.append([(f, g, _chunk(p, c, a, e, f, g)) for f, g in _choices(p, blocks)])
        for choice in itertools.product(*options):
            obj, fits = _score(p, [x[2] for x in choice])
            if fits and (best is None or obj < best.objective):
                best = Solution(bounds, tuple(x[0] for x in choice), tuple(x[1] for x in choice), obj)
    return best


def _prefix(values) -> list[int]:
    return list(itertools.accumulate(values, initial=0))


class _Model:
    """The CP-SAT variables of one instance: per chunk its work, activations and state as expressions."""

    def __init__(self, p: Problem):
        self.p, self.m = p, cp_model.CpModel()
        self.work, self.act, self.static, self.blocks, self.full, self.sel = [], [], [], [], [], []

    def mode_limits(self, blocks, full, sel) -> None:
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

    def block_counts(self) -> None:
        """Blocks per chunk: at least one each, all of them in total (or the fixed bounds)."""
        p, m = self.p, self.m
        total = sum(p.is_block)
        for c in range(p.chunks):
            if p.fixed_bounds:
                starts = _prefix(p.fixed_bounds)
                n = m.new_constant(sum(p.is_block[starts[c]:starts[c + 1]]))
            else:
                n = m.new_int_var(1, total, f"n{c}")
            self.blocks.append(n)
        m.add(sum(self.blocks) == total)

    def uniform(self) -> None:
        """Every block identical: chunk quantities are linear in (blocks, full, selective)."""
        p, m = self.p, self.m
        self.block_counts()
        b = p.is_block.index(True)
        w, a, st = p.work[b], p.act[b], p.static[b]
        head = [i for i in range(p.lead)]
        tail = [i for i in range(p.layers - p.tail, p.layers)]
        for c, n in enumerate(self.blocks):
            f, g = m.new_int_var(0, sum(p.is_block), f"f{c}"), m.new_int_var(0, sum(p.is_block), f"g{c}")
            self.mode_limits(n, f, g)
            edge = (head if c == 0 else []) + (tail if c == p.chunks - 1 else [])
            last = p.layers - 1 if c == p.chunks - 1 else b
            send = p.send[c][last] if p.send else 0
            self.work.append(w[NONE] * n + (w[FULL] - w[NONE]) * f + (w[SELECTIVE] - w[NONE]) * g
                             + sum(p.work[i][NONE] for i in edge) + send)
            self.act.append(a[NONE] * n + (a[FULL] - a[NONE]) * f + (a[SELECTIVE] - a[NONE]) * g
                            + sum(p.act[i][NONE] for i in edge))
            self.static.append(st * n + sum(p.static[i] for i in edge))
            self.full.append(f)
            self.sel.append(g)
        self._break_symmetry(sum(p.is_block) + 1)

    def _break_symmetry(self, radix: int) -> None:
        """Chunks of one rank that are interchangeable (no prefix or suffix, the same in-flight count in
        every vector) can be permuted without changing time or memory, so only the permutation whose
        (blocks, full, selective) triples descend is searched. Interleaved schedules need this."""
        p = self.p
        for r in range(p.pp):
            mine = list(range(r, p.chunks, p.pp))
            groups: dict[tuple, list[int]] = {}
            for i, c in enumerate(mine):
                if c in (0, p.chunks - 1):
                    continue
                column = tuple(vec[i] for vec in p.in_flight[r]) if p.in_flight else ()
                groups.setdefault(column, []).append(c)
            for chunks in groups.values():
                keys = [self.blocks[c] * radix * radix + self.full[c] * radix + self.sel[c] for c in chunks]
                for a, b in zip(keys, keys[1:]):
                    self.m.add(a >= b)

    def general(self) -> None:
        """Any layer costs: chunk c is [cut_c, cut_c+1) split at j1 <= j2 (full | selective | none),
        each quantity a difference of prefix-sum tables read with element constraints."""
        p, m = self.p, self.m
        L, C = p.layers, p.chunks
        pw = [_prefix(w[k] for w in p.work) for k in range(3)]
        pa = [_prefix(a[k] for a in p.act) for k in range(3)]
        pb = _prefix(int(x) for x in p.is_block)
        ps = _prefix(p.static)
        if p.fixed_bounds:
            cut = [m.new_constant(v) for v in _prefix(p.fixed_bounds)]
        else:
            cut = [m.new_constant(0)] + [m.new_int_var(0, L, f"cut{c}") for c in range(1, C)] + [m.new_constant(L)]
        at = self._at
        for c in range(C):
            a, e = cut[c], cut[c + 1]
            j1, j2 = m.new_int_var(0, L, f"j1_{c}"), m.new_int_var(0, L, f"j2_{c}")
            m.add(a <= j1)
            m.add(j1 <= j2)
            m.add(j2 <= e)
            ba, b1, b2, be = (at(pb, x) for x in (a, j1, j2, e))
            n, f, g = be - ba, b1 - ba, b2 - b1
            m.add(n >= 1)
            self.mode_limits(n, f, g)
            self.blocks.append(n)
            send = at([0, *p.send[c]], e) if p.send else 0
            self.work.append(at(pw[FULL], j1) - at(pw[FULL], a) + at(pw[SELECTIVE], j2) - at(pw[SELECTIVE], j1)
                             + at(pw[NONE], e) - at(pw[NONE], j2) + send)
            self.act.append(at(pa[FULL], j1) - at(pa[FULL], a) + at(pa[SELECTIVE], j2) - at(pa[SELECTIVE], j1)
                            + at(pa[NONE], e) - at(pa[NONE], j2))
            self.static.append(at(ps, e) - at(ps, a))
            self.full.append(f)
            self.sel.append(g)
        if not p.fixed_bounds and C > 1:  # the prefix stays on the first chunk, the suffix on the last
            m.add(cut[1] >= p.lead + 1)
            m.add(cut[C - 1] <= L - p.tail - 1)
        self.cut = cut

    def _at(self, table: list[int], index) -> cp_model.IntVar:
        v = self.m.new_int_var(min(table), max(table), "")
        self.m.add_element(index, table, v)
        return v

    def objective_and_memory(self) -> None:
        p, m = self.p, self.m
        self.busiest = m.new_int_var(0, sum(max(w) for w in p.work) + sum(max(s, default=0) for s in p.send), "M")
        for r in range(p.pp):
            mine = list(range(r, p.chunks, p.pp))
            m.add(self.busiest >= sum(self.work[c] for c in mine))
            base = sum(self.static[c] for c in mine)
            for vec in p.in_flight[r] if p.in_flight else ():
                m.add(base + sum(n * self.act[c] for n, c in zip(vec, mine)) <= p.cap[r])
        if p.vpp == 1:
            primary = (p.micro_batches - 1) * self.busiest + sum(self.work)
        else:
            largest = self.m.new_int_var(0, sum(max(w) for w in p.work) + sum(max(s, default=0) for s in p.send), "C")
            for w in self.work:
                self.m.add(largest >= w)
            primary = p.micro_batches * self.busiest + (p.pp - 1) * largest
        weights = _tie_weights(3 * p.chunks)
        tie = sum(w * v for w, v in zip(weights, [*self.blocks, *self.full, *self.sel]))
        self.scale = sum(weights) * max(1, sum(p.is_block)) + 1
        m.minimize(primary * self.scale + tie)


def _tie_weights(n: int) -> list[int]:
    """Fixed pseudo-random weights in [1, 1000] (a linear congruential sequence): a tie-breaking term
    that makes the optimum unique in practice, so parallel CP-SAT workers agree on the answer."""
    out, x = [], 12345
    for _ in range(n):
        x = (1103515245 * x + 12345) % 2**31
        out.append(1 + x % 1000)
    return out


def solve(p: Problem, time_limit: float = 10.0, hint: Solution | None = None) -> Solution | None:
    """The optimal assignment under `p` (None if nothing fits). One worker first for a short
    deterministic time (enough for most instances), then eight (the portfolio proves the knapsack-like
    ones in milliseconds where one worker needs seconds); fixed seeds, deterministic-time limits, and a
    tie-breaking term that makes the optimum unique, so a solve that ends OPTIMAL always returns the
    same assignment. One stopped by the limit reports FEASIBLE with its gap."""
    mod = _Model(p)
    if p.uniform() and not p.fixed_bounds:
        mod.uniform()
    else:
        mod.general()
    mod.objective_and_memory()
    if hint is not None and not hasattr(mod, "cut"):  # hints for the uniform encoding
        starts = _prefix(hint.bounds)
        for c in range(p.chunks):
            mod.m.add_hint(mod.blocks[c], sum(p.is_block[starts[c]:starts[c + 1]]))
            mod.m.add_hint(mod.full[c], hint.full[c])
            mod.m.add_hint(mod.sel[c], hint.selective[c])
    solver, status = None, cp_model.UNKNOWN
    for workers, limit in ((1, QUICK), (WORKERS, time_limit)):
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = workers
        solver.parameters.random_seed = 0
        solver.parameters.max_deterministic_time = limit
        status = solver.solve(mod.m)
        if status in (cp_model.OPTIMAL, cp_model.INFEASIBLE):
            break
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    counts = [solver.value(n) for n in mod.blocks]
    bounds = [n for n in counts]
    bounds[0] += p.lead
    bounds[-1] += p.tail
    if hasattr(mod, "cut"):
        v = [solver.value(x) for x in mod.cut]
        bounds = [b - a for a, b in zip(v, v[1:])]
    full = tuple(solver.value(f) for f in mod.full)
    sel = tuple(solver.value(g) for g in mod.sel)
    obj, fits = evaluate(p, bounds, full, sel)
    bound = solver.best_objective_bound / mod.scale
    gap = 0.0 if status == cp_model.OPTIMAL else max(0.0, (obj - bound) / max(obj, 1))
    return Solution(tuple(bounds), full, sel, obj, solver.status_name(status), gap,
                    {"wall_s": solver.wall_time, "branches": solver.num_branches})
