"""Work budgets: the search's time limit counted in work rather than read off the clock, so that the
same inputs give the same plan run after run; the clock only bounds it.

A unit of work is about one second on the machine the constants were measured on (the project's 2-core
CPU machine; CP-SAT's, with its presolve off (`rounds.run_round`): 2026-12-04, every master round of the five
searches of benchmarks/search.py at 30 and 60 s, 475 rounds, least squares wall = 1.71 x deterministic s
+ 1.03e-4 s x constraints; the constants below are rounded up so that no search with rounds of seconds
is undercharged: the 60 s searches' rounds charged 1.09x (Llama 3 70B) to 1.24x (GPT 1T, 7 rounds of
2,600 constraints of 128 chunks each) their wall, the 30 s searches' 1.17-1.49x, 2.3-2.7x for GPT-3 13B's
rounds of milliseconds. At 1e-4 a constraint GPT 1T's were charged 0.98x, its 60 s search ran to 52-54 s
and, beside a busy process, into the clock, with another runner-up table. With presolve on, the fit was
1.95e-4 s a constraint and 1.71 a deterministic second, the constants 2.5e-4 and 2.0): CP-SAT's own
deterministic time costs WORK_PER_DETERMINISTIC_S units a deterministic second, each round
WORK_PER_CONSTRAINT for each constraint of its master (model copy and loading, and the master's
building in Python), each schedule action WORK_PER_ACTION when a
solve builds its action orders and again each time it simulates them (WORK_PER_PATH_ACTION when the
simulation also finds the longest paths), each discrete-floor test
(`floor.reachable`) WORK_PER_REACHABLE (0.05 s for 205 in the 13B search), and the first time it meets
an interleaved schedule shape, its in-flight counts (WORK_PER_ACTION an action) and their mixed floor
(WORK_PER_MIX_RANK per rank plus WORK_PER_MIX per rank, pair of in-flight vectors and pair of chunks,
numpy: 24 ms for pp 32, v3, 33 vectors a rank; 12 shapes from pp 4 to 96, 2026-12-02, within 10% but
the smallest);
outside the solves, each candidate's lower bound WORK_PER_BOUND, and each data-parallel or pipeline
axis ring its collectives are priced over WORK_PER_RING_RANK per rank of the cluster (`CostModel.
ring_ranks_priced`: the rings of the groups that share nodes with the first are routed hop by hop).
Measured 2026-12-04, two runs each, after collective pricing stopped listing every group: 0.16 s for
GPT-3 13B's 3,027 candidates (54 rings of 32 ranks), 0.28-0.29 s for 175B's 7,179 (139 of 128),
0.25-0.26 s for Llama 3 70B's 6,010 (126 of 128), 1.63-1.69 s for the 1T's 31,203 (702 of 3,072),
1.44-1.57 s for Llama 3 405B's 5,911 (278 of 16,384); charged 0.15, 0.36, 0.30, 2.10 and 1.43: within
30%. (At 2.5e-7 per node and candidate, the 1T was charged 4.55 for 2.3-2.5 s of bounds, so a 10 s
limit stopped it at its first plan.) Each estimate and seed plan by its layers and schedule actions
(WORK_PER_CANDIDATE, WORK_PER_ESTIMATE_ACTION, WORK_PER_SEED_LAYER, below); each LP floor (`relax.lp_floor`: the
master's model built, read back, solved by GLOP and checked) WORK_PER_LP_NONZERO per nonzero of its
rows (2026-12-03: 1.0e-5 s on average over Llama 3 405B's first 200 pipeline candidates, 2.0e-5 at
worst; 0.05 s for tp8-pp16 v2, 0.57 s for GPT 1T's tp8-pp32 v4 with 60k nonzeros); each re-solve of
that LP with other bounds on a few rows (`totals.branches`) WORK_PER_LP_RESOLVE per nonzero
(2026-12-03: 1.2-1.5e-6 s over GPT-3 175B tp4-pp8 v2/v3/v4 and Llama 3 70B tp4-pp4 v3, 200-400 nodes
each, GLOP re-solve, duals and the exact check); each neighbour local search looks at (`local.improve`:
its chunks, the memory of the ranks it changes, the paths' floor) WORK_PER_NEIGHBOUR (2026-12-03: 36-40
us over 321-3,600 neighbours for GPT-3 13B tp1-pp2 v3 and Llama 3 70B tp4-pp4 v3; its simulations are
charged as actions, a step taken simulated again with its paths; 2026-12-04, in 60 s searches of the
five cases of benchmarks/search.py, local search was charged 2.3-5.4x its wall at 3 us an action, which
WORK_PER_ACTION and WORK_PER_PATH_ACTION now replace).

The clock is the hard bound: a limit of S seconds is WORK_SHARE x S units of work and a deadline S
seconds after the start. On a machine like that one the work runs out first (the same plan run after
run); on a slower or loaded one the clock stops the run, and the answer says TIME_LIMIT with the gap
it proved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time

__all__ = ["Budget", "WORK_PER_DETERMINISTIC_S", "WORK_PER_CONSTRAINT", "WORK_PER_ACTION", "WORK_PER_PATH_ACTION", "WORK_PER_BOUND",
           "WORK_PER_RING_RANK", "WORK_PER_REACHABLE", "WORK_PER_MIX", "WORK_PER_MIX_RANK", "WORK_PER_CANDIDATE", "WORK_PER_ESTIMATE_ACTION", "WORK_PER_SEED_LAYER", "WORK_PER_FLOOR_LAYER", "WORK_PER_FLOOR_ACTION", "WORK_PER_LP_NONZERO", "WORK_PER_LP_RESOLVE", "WORK_PER_CUT_RESOLVE",
           "WORK_PER_KELLEY_NONZERO", "WORK_PER_KELLEY_ROW", "WORK_PER_KELLEY_ROW_CHUNK", "WORK_PER_NEIGHBOUR", "WORK_PER_NEIGHBOUR_CHUNK2", "WORK_PER_ROUNDED_CHUNK", "neighbour_work", "WORK_PER_PROBLEM_LAYER", "WORK_SHARE", "WORK_PER_SIMULATION", "WORK_PER_PATH_SIMULATION",
           "WORK_PER_SIMULATED_ACTION", "WORK_PER_SIMULATED_PATH_ACTION", "WORK_PER_SIMULATED_CHUNK",
           "WORK_PER_SIMULATED_PATH_CHUNK", "simulation_work"]

WORK_PER_DETERMINISTIC_S = 2.0
WORK_PER_CONSTRAINT = 1.5e-4
WORK_PER_REACHABLE = 2.5e-4
WORK_PER_MIX = 5e-8
WORK_PER_MIX_RANK = 2.5e-4
WORK_PER_ACTION = 4e-7
"""One schedule action simulated without its paths, or built into the in-flight counts and seed paths
(2026-12-04, `partition.evaluate` over five shapes from 192 to 65,536 actions - GPT-3 13B tp1-pp2 v3 to
GPT 1T tp8-pp32 v4: 0.14-0.41 us an action simulated, 0.11-0.45 us its in-flight counts, 0.14-0.36 us
its seed paths; the orders are compiled once per shape, `schedule.program`. Before that compilation,
0.46-0.75 us simulated and 7e-7 charged; before a faster simulation, 3 us, when searches charged local
search 2.3-5.4x its wall)."""
WORK_PER_PATH_ACTION = 7e-7
"""One schedule action simulated with its longest paths (`evaluate(..., paths=True)`, `cuts.separate`):
0.33-0.63 us over the same five shapes (1.30-1.61 us, charged 1.7e-6, before the compiled orders)."""
WORK_PER_SIMULATION = 3e-5
WORK_PER_SIMULATED_CHUNK = 8e-6
WORK_PER_SIMULATED_ACTION = 2e-7
WORK_PER_PATH_SIMULATION = 1e-5
WORK_PER_SIMULATED_PATH_CHUNK = 1.1e-5
WORK_PER_SIMULATED_PATH_ACTION = 4.7e-7
"""Local search's simulations (`local.improve`, `simulation_work`): a fixed part, a part per chunk (the
chunks' parts and the ranks' memory, `partition.evaluate`) and a part per schedule action; with the
longest paths (the PATH constants) for a step taken. Measured 2026-12-04 (`partition.evaluate` on 11
shapes of the five cases of benchmarks/search.py, from GPT-3 13B tp1-pp2 v3, 6 chunks and 192 actions,
to GPT 1T tp8-pp32 v4, 128 and 65,536; least squares on relative error): 2.1e-5 s + 7.2e-6 a chunk +
1.79e-7 an action, with paths 6.9e-6 + 1.03e-5 + 4.32e-7, each shape within 6%; the constants about 10%
above. Before, a fixed part and a part per action fitted on GPT-3 13B and Llama 3 70B alone (6e-5 +
1.8e-7, with paths 7e-5 + 3.7e-7) charged Llama 3 405B's shapes (32-64 chunks of few actions) 0.43-0.52x
their wall and GPT 1T's 0.78-0.95x, and the 1T's 60 s search charged its dive, mostly local search, 0.82x
its wall."""
WORK_PER_BOUND = 5e-5
WORK_PER_RING_RANK = 2.5e-7
WORK_PER_CANDIDATE = 3e-5
WORK_PER_ESTIMATE_ACTION = 5e-7
WORK_PER_SEED_LAYER = 8e-5
"""An estimate (`CostModel.estimate`) costs WORK_PER_CANDIDATE a layer and WORK_PER_ESTIMATE_ACTION a
schedule action; a seed plan (`pricing.problem` and `seeding.seed`) WORK_PER_SEED_LAYER a layer and as
much an action (`ceiling.estimate_work`, `seed_work`). Measured 2026-12-04 in the ceilings of the five
cases of benchmarks/search.py (44-60 candidates each, with the compiled simulation): an estimate 1.1 ms
(GPT-3 13B, 94 actions) to 11.2 ms (GPT 1T, 28k actions), a seed 2.7-22.9 ms; charged 1.2-1.9x and
1.1-2.0x. At 1.5e-4 a layer for either, whatever the schedule, they were charged 0.8x (the 1T's
estimates) to 6.4x (Llama 3 405B's, 253 actions)."""
WORK_PER_FLOOR_LAYER = 1e-5
WORK_PER_FLOOR_ACTION = 2.5e-8
"""A discrete floor (`floor.floor`, a bisection over `reachable`) per layer of the model and per action
of the candidate's schedule (2 x micro-batches x chunks). Least squares over 80 random candidates of
each of the five cases of benchmarks/search.py, 2026-12-04, gave 2.0e-5 s a layer + 4.9e-8 s an action
(1.2-4.1 ms a floor on average per case), measured before the floors remembered their ranges
(`floor._Ranges.works`). After it, every floor of the 60 s searches (by `ceiling.by_floor` and
`Run`, 2026-12-04): 0.2-1.3 ms in the median, 0.01-0.26 s in all per case and kind; at 4e-5 and 1e-7
they were charged 3.6-9.1x that. Now 0.9-2.3x (the 13B's, the cheapest, most)."""
WORK_PER_LP_NONZERO = 9e-6
"""An LP floor built, read back, solved and checked, per nonzero. 1.1e-5 (the 2026-12-03 fit above) was
charged 1.7-3.6x its wall in the 60 s searches of GPT-3 175B, GPT 1T and Llama 3 405B on 2026-12-04
(`relax.Kelley`'s first solve 3.4-3.6x, `Run.lp` 1.7-2.1x, `totals.branches`' first 1.45-2.2x), once the
simulation was compiled and the LP floors charged once."""
WORK_PER_LP_RESOLVE = 5e-7
"""One node of `totals.branches` (or one of a rank interval's two solves), per nonzero. 1.5e-6 was fitted
(2026-12-03) before GLOP went on from its basis (`relax.ATTEMPTS`); timed again 2026-12-05 in the 60 s
searches of GPT-3 175B, Llama 3 70B, GPT 1T and Llama 3 405B: a node 250-390 ns a nonzero (1,572 of them for
405B), an interval's solve 230-300 ns, the tree built 6.3-7.1 us (WORK_PER_LP_NONZERO). At 1.5e-6 405B's
branching was charged 5.5x its wall."""
WORK_PER_CUT_RESOLVE = 3.5e-7
"""One re-solve of the path floor's LP after Kelley's cuts were added (`relax.Kelley.run`), per nonzero:
2026-12-04, every re-solve of LP dives on Llama 3 405B tp8-pp16 v4, GPT 1T tp8-pp32 v4, GPT-3 175B tp4-pp8
v3 and Llama 3 70B tp4-pp4 v3 (18-67 each): 1.13, 0.52, 0.59 and 0.60e-6 s on average (one re-solve at
most 1.75e-6). Charged WORK_PER_LP_RESOLVE (measured on `totals.branches`' re-solves) they cost 1.3-2.9x
their wall; Llama 3 70B on 8x16 at a 40 s limit: gap 0.040 -> 0.012%. At 1.2e-6 a Kelley round (re-solve,
then the paths the point violates, `WORK_PER_PATH_ACTION`) was charged 1.72x (GPT-3 175B), 1.84x (GPT 1T)
and 1.94x (Llama 3 405B) its wall in their 60 s searches of 2026-12-04, after the compiled simulation;
8e-7 made that 1.1-1.4x. Then GLOP went on from its basis (`relax.ATTEMPTS`: no preprocessing, dual
simplex), and the same searches' re-solves with their exact checks (Kelley's rounds less its path
searches) took 2.8e-7 (GPT-3 175B, 405B), 3.5e-7 (70B) and 5.2e-7 s (1T: long rows, whose exact check is
more of it) a nonzero; 6e-7 charged them 1.15x (1T) to 2.2x. Timed apart (2026-12-05), the re-solve is
174 (405B), 176 (70B), 194 (175B) and 301 ns (1T) a nonzero, its exact check 13-17 ns, and the rest was
the rows added, uncharged (WORK_PER_KELLEY_ROW): 3.5e-7 charges the re-solves 1.1x (1T) to 1.8x."""
WORK_PER_KELLEY_NONZERO = 5e-6
WORK_PER_KELLEY_ROW = 2.5e-4
WORK_PER_KELLEY_ROW_CHUNK = 2.5e-6
"""Kelley's LP (`relax.Kelley`): built, per nonzero (WORK_PER_KELLEY_NONZERO; its first solve is a
re-solve's), and each path added as a row (through the master's CP-SAT model, read back, into GLOP)
WORK_PER_KELLEY_ROW plus WORK_PER_KELLEY_ROW_CHUNK per chunk. Measured 2026-12-05 in the 60 s searches
of GPT-3 175B, Llama 3 70B, GPT 1T and Llama 3 405B: built 3.2-4.2 us a nonzero (charged 9e-6 as an LP
floor, 2.2-2.9x), a re-solve 174-301 ns a nonzero and its exact check 13-17 (WORK_PER_CUT_RESOLVE), a
row 0.20 ms (70B, 12-16 chunks) to 0.49 ms (1T, 128 chunks; 4,758 rows, 2.3 s, uncharged before)."""
WORK_PER_NEIGHBOUR = 2.5e-5
WORK_PER_NEIGHBOUR_CHUNK2 = 2.2e-8
"""A neighbour local search looks at (`local._fitting`: its chunks' parts, the memory of the ranks it
changes over their in-flight vectors, the paths' floor) costs WORK_PER_NEIGHBOUR plus
WORK_PER_NEIGHBOUR_CHUNK2 per chunk squared (`neighbour_work`): 2026-12-05, `local.improve` from the seed
plans, 3 units each, its simulations taken out: 25 us at 12 and 16 chunks (Llama 3 70B tp4-pp4 v3, GPT-3
175B tp4-pp8 v2), 67 at 48 (Llama 3 405B tp8-pp16 v3), 93 at 64 and 349 at 128 (GPT 1T tp8-pp32 v2, v4);
22 us + 0.02 us x chunks^2 fits each within 10%; the same runs charged their neighbours 1.13x (48
chunks) to 1.7x (128) at these constants. At 6e-5 a neighbour whatever its chunks, they were charged 2.4x
(12-16 chunks), 0.9x (48) and 0.17x (128): Llama 3 405B's 10 s search (48-64 chunks) found 7.625 s/step
with that local search undercharged, 7.712 charged as it is."""
WORK_PER_ROUNDED_CHUNK = 6e-5
"""An LP dive's rounding (`dive.rounded`), per chunk: the flat neighbour charge it used to borrow, kept
as it was. Timed once (2026-12-05, GPT 1T's 60 s search: one rounding, 6.3 ms for 5.8 ms charged); not
fitted."""
WORK_PER_PROBLEM_LAYER = 1e-5
"""One partition problem built for a dominance test (`Run.dominated`), per layer of the model (2026-12-03,
300 pipeline candidates each: 0.55 ms for GPT-3 175B's 98 layers, 1.09 ms for GPT 1T's 130 and 1.07 ms for
Llama 3 405B's 128, their costs cached: 5.6-8.4e-6 s a layer)."""
WORK_SHARE = 0.9
"""Work units per second of a time limit: below 1, so that where the constants were measured the work
runs out before the clock does."""


def neighbour_work(chunks: int) -> float:
    """What local search is charged for one neighbour of a problem of `chunks` chunks looked at."""
    return WORK_PER_NEIGHBOUR + WORK_PER_NEIGHBOUR_CHUNK2 * chunks * chunks


def simulation_work(chunks: int, actions: int, paths: bool = False) -> float:
    """What local search is charged for one simulation of `chunks` chunks and `actions` schedule actions."""
    if paths:
        return WORK_PER_PATH_SIMULATION + WORK_PER_SIMULATED_PATH_CHUNK * chunks + WORK_PER_SIMULATED_PATH_ACTION * actions
    return WORK_PER_SIMULATION + WORK_PER_SIMULATED_CHUNK * chunks + WORK_PER_SIMULATED_ACTION * actions


@dataclass
class Budget:
    """`limit` units of work, `used` so far; `wall_deadline` is the clock's hard bound (perf_counter
    seconds; by default limit / WORK_SHARE seconds from now: `seconds`)."""

    limit: float
    used: float = 0.0
    wall_deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.wall_deadline:
            self.wall_deadline = time.perf_counter() + self.limit / WORK_SHARE

    @classmethod
    def seconds(cls, limit: float, start: float | None = None) -> "Budget":
        """A time limit of `limit` seconds from `start` (perf_counter; now by default)."""
        start = time.perf_counter() if start is None else start
        return cls(WORK_SHARE * limit, wall_deadline=start + limit)

    def left(self) -> float:
        return self.limit - self.used

    def wall_left(self) -> float:
        return self.wall_deadline - time.perf_counter()

    def spent(self) -> bool:
        return self.left() <= 0 or self.wall_left() <= 0

    def spend(self, work: float) -> None:
        self.used += work

    def child(self, limit: float) -> "Budget":
        """A share of at most `limit` of what is left, under the same clock cap."""
        return Budget(min(limit, self.left()), wall_deadline=self.wall_deadline)
