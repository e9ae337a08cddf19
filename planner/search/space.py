"""The search space: what the user fixed (`Constraints`), the checks that no plan can satisfy them,
a fixed layout written like a label (`parse_layout`), and the enumeration of discrete points
(mesh factorisation x micro-batch x schedule x sharding x sequence parallel) the search prices."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from planner.cluster.graph import Cluster
from planner.cost.model import MEMORY_FRACTION, CostModel
from planner.errors import PlannerError
from planner.types.profile import ModelProfile
from planner.types.strategy import EXCLUDED, Strategy, check_schedule

__all__ = ["Constraints", "default_global_batch", "skeletons", "check_constraints", "parse_layout"]


@dataclass(frozen=True, kw_only=True)
class Constraints:
    """What the user fixed (None = search it)."""

    global_batch: int | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    vpp: int | None = None
    micro_batch: int | None = None
    schedule: str | None = None
    zero: int | None = None
    dp_shard: int | None = None
    recompute: str | None = None
    sequence_parallel: bool | None = None
    tp_across_nodes: bool = False
    max_micro_batch: int = 64
    """Searched micro-batch sizes are the powers of two up to this (any size can be fixed)."""
    max_vpp: int = 4
    top_k: int = 5
    memory_fraction: float = MEMORY_FRACTION
    """Share of each GPU's memory after the runtime reserve that a plan may fill (cost/model.py)."""
    time_limit: float = 60.0
    """Work limit of the whole search, in units of about a second (`budget.py`): counted, not timed, so the
    plan does not depend on the machine's load; the clock caps a run at 4x it."""


def default_global_batch(world: int) -> int:
    """Eight samples per GPU: a documented default; real runs should pass their own --global-batch."""
    return 8 * world


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def skeletons(cm: CostModel, c: Constraints, batch: int, excluded: dict[str, int]) -> Iterator[Strategy]:
    """Every discrete point (no stage bounds, uniform recompute placeholder) the constraints allow."""
    world, profile = cm.world, cm.profile
    gpn = cm.cluster.gpus_per_node
    blocks = max(1, len(profile.blocks))
    for tp in profile.tp_degrees if c.tp is None else [c.tp]:
        if world % tp or (c.tp is None and tp > gpn and not c.tp_across_nodes) or (tp > gpn and tp % gpn):
            continue
        for pp in _divisors(world // tp) if c.pp is None else [c.pp]:
            if (world // tp) % pp or pp > blocks or (c.pp is None and len(profile.blocks) == 0 and pp > 1):
                continue
            dp = world // (tp * pp)
            if c.dp is not None and dp != c.dp:
                continue
            if batch % dp:
                excluded["batch not divisible by dp"] = excluded.get("batch not divisible by dp", 0) + 1
                continue
            per_dp = batch // dp
            sizes = [m for m in _divisors(per_dp) if m <= c.max_micro_batch and m & (m - 1) == 0]
            for mbs in sizes if c.micro_batch is None else [c.micro_batch]:
                if per_dp % mbs:
                    continue
                n = per_dp // mbs
                yield from _knobs(c, dp, tp, pp, mbs, n, blocks, excluded)


def _knobs(c: Constraints, dp, tp, pp, mbs, n, blocks, excluded) -> Iterator[Strategy]:
    scheds = ["1f1b"] if pp == 1 else ["gpipe", "1f1b", "interleaved"]
    for sched in scheds if c.schedule is None else [c.schedule]:
        vpps = [1] if sched != "interleaved" else range(2, min(c.max_vpp, blocks // pp) + 1)
        for vpp in vpps if c.vpp is None else [c.vpp]:
            why = check_schedule(sched, pp, vpp, n)
            if why:
                excluded[why.split(" (")[0]] = excluded.get(why.split(" (")[0], 0) + 1
                continue
            if pp * vpp > blocks:
                continue
            zeros = [0] if dp == 1 else [0, 2, 3]
            for zero in zeros if c.zero is None else [c.zero if dp > 1 else 0]:
                shards = [1] if zero == 0 else [d for d in _divisors(dp) if d == dp or 1 < d <= 64 and d & (d - 1) == 0]
                for ds in shards if c.dp_shard is None else [c.dp_shard]:
                    if c.dp_shard is not None and (zero == 0 and ds > 1 or dp % ds):
                        continue  # a fixed shard group that this dp or DDP cannot have
                    sps = [False] if tp == 1 else [True, False]
                    for sp in sps if c.sequence_parallel is None else [c.sequence_parallel and tp > 1]:
                        yield Strategy(dp=dp, tp=tp, pp=pp, vpp=vpp, dp_shard=ds, micro_batch_size=mbs,
                                       num_micro_batches=n, schedule=sched, zero=zero, sequence_parallel=sp,
                                       recompute=("none",) * (pp * vpp))


_TOKEN = re.compile(r"^(tp|pp|dp|mbs|v|zero)(\d+)$")


def parse_layout(spec: str, profile_: ModelProfile, world: int, batch: int) -> Strategy:
    """A fixed layout written like a plan label: `tp8-pp64-dp6[-mbs1][-1f1b|gpipe|interleaved][-v2]
    [-zero0|2|3][-sp]` (unsaid knobs: mbs 1, 1f1b, zero 0, no SP; recompute and bounds are solved)."""
    knobs = {"mbs": 1, "v": 1, "zero": 0}
    schedule, sp = "1f1b", False
    for tok in filter(None, re.split(r"[-\s]+", spec.strip())):
        m = _TOKEN.match(tok)
        if m:
            knobs[m.group(1)] = int(m.group(2))
        elif tok in ("1f1b", "gpipe", "interleaved"):
            schedule = tok
        elif tok == "sp":
            sp = True
        else:
            raise PlannerError(f"compare='{spec}': unknown part '{tok}'; write e.g. tp8-pp64-dp6-mbs1-1f1b")
    tp, pp = knobs.get("tp", 1), knobs.get("pp", 1)
    dp = knobs.get("dp", world // (tp * pp))
    if dp * tp * pp != world:
        raise PlannerError(f"compare='{spec}': dp{dp} x tp{tp} x pp{pp} = {dp * tp * pp}, not the {world} GPUs")
    if batch % (dp * knobs["mbs"]):
        raise PlannerError(f"compare='{spec}': global batch {batch} is not a multiple of dp x mbs = {dp * knobs['mbs']}")
    n = batch // (dp * knobs["mbs"])
    try:
        return Strategy(dp=dp, tp=tp, pp=pp, vpp=knobs["v"], dp_shard=dp if knobs["zero"] else 1,
                        micro_batch_size=knobs["mbs"], num_micro_batches=n, schedule=schedule, zero=knobs["zero"],
                        sequence_parallel=sp, recompute=("none",) * (pp * knobs["v"]))
    except ValueError as e:
        raise PlannerError(f"compare='{spec}': {e}") from None


def check_constraints(prof: ModelProfile, cluster: Cluster, c: Constraints) -> None:
    """One-line errors, with the arithmetic, for knobs that no plan can satisfy."""
    world, blocks = cluster.num_gpus, len(prof.blocks)
    batch = c.global_batch or default_global_batch(world)
    if not 0 < c.memory_fraction <= 1:
        raise PlannerError(f"memory_fraction={c.memory_fraction:g}: give a share of each GPU's memory in (0, 1], "
                           "e.g. 0.9")
    if c.tp is not None and c.tp not in prof.tp_degrees:
        if prof.tp_degrees == (1,):
            raise PlannerError(f"tp={c.tp}: {prof.model_name}: {prof.tp_note}")
        raise PlannerError(f"tp={c.tp}: {prof.model_name} splits into whole heads only with tp in "
                           f"{', '.join(map(str, prof.tp_degrees))}")
    if c.pp is not None and c.pp > max(1, blocks):
        raise PlannerError(f"pp={c.pp} is deeper than the model's {blocks} blocks; use pp={max(1, blocks)} or fewer")
    fixed = [(n, v) for n, v in (("tp", c.tp), ("pp", c.pp), ("dp", c.dp)) if v is not None]
    prod = 1
    for _, v in fixed:
        prod *= v
    if world % prod or (len(fixed) == 3 and prod != world):
        arith = " x ".join(f"{n}={v}" for n, v in fixed)
        raise PlannerError(f"{arith} = {prod} does not {'equal' if len(fixed) == 3 else 'divide'} the {world} GPUs")
    if c.dp is not None and batch % c.dp:
        near = sorted({batch - batch % c.dp, batch - batch % c.dp + c.dp} - {0})
        raise PlannerError(f"global_batch={batch} is not divisible by dp={c.dp}; use global_batch={' or '.join(map(str, near))}")
    if c.dp is not None and c.micro_batch is not None and batch % (c.dp * c.micro_batch):
        step = c.dp * c.micro_batch
        near = sorted({batch - batch % step, batch - batch % step + step} - {0})
        raise PlannerError(f"global_batch={batch} is not divisible by dp x micro-batch = {step}; use global_batch="
                           f"{' or '.join(map(str, near))}")
    if c.zero is not None and c.zero not in (0, 2, 3):
        raise PlannerError(f"zero={c.zero}: use 0, 2 or 3 ({EXCLUDED['zero1']})")
    if c.dp_shard is not None and c.zero == 0 and c.dp_shard > 1:
        raise PlannerError(f"dp_shard={c.dp_shard} shards with FSDP, but zero=0 is DDP; use zero=2 or 3")
    if c.dp_shard is not None and c.dp is not None and c.dp % c.dp_shard:
        raise PlannerError(f"dp_shard={c.dp_shard} does not divide dp={c.dp}; use a divisor of {c.dp}")
    if c.zero in (2, 3) and c.dp == 1:
        raise PlannerError(f"zero={c.zero} shards over data parallel, but dp=1 has nothing to shard over; "
                           "leave zero= unset or raise dp=")
    if c.time_limit <= 0:
        raise PlannerError(f"time_limit={c.time_limit:g}: give a positive number of seconds")
    if c.vpp is not None and c.vpp > 1 and c.schedule not in (None, "interleaved"):
        raise PlannerError(f"vpp={c.vpp} needs schedule=interleaved, not {c.schedule}")


