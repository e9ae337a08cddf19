"""`plan()`: profile, build the cluster, check the user's knobs, search, and wrap the result in a `Plan`."""
from __future__ import annotations

import re
from dataclasses import replace

from planner.api import profile
from planner.cluster.graph import Cluster, parse_gpus
from planner.cost.model import CostModel
from planner.errors import PlannerError
from planner.cost.memory import held_after_step
from planner.cluster.placement import link_classes
from planner.types.plan import Alternative, Plan
from planner.types.profile import ModelProfile
from planner.search.search import Candidate, Constraints, SearchResult, default_global_batch, evaluate_fixed, search
from planner.types.strategy import EXCLUDED, Strategy

__all__ = ["plan", "plan_many", "plan_on", "parse_layout", "check_constraints"]

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
            raise PlannerError(f"--compare '{spec}': unknown part '{tok}'; write e.g. tp8-pp64-dp6-mbs1-1f1b")
    tp, pp = knobs.get("tp", 1), knobs.get("pp", 1)
    dp = knobs.get("dp", world // (tp * pp))
    if dp * tp * pp != world:
        raise PlannerError(f"--compare '{spec}': dp{dp} x tp{tp} x pp{pp} = {dp * tp * pp}, not the {world} GPUs")
    if batch % (dp * knobs["mbs"]):
        raise PlannerError(f"--compare '{spec}': global batch {batch} is not a multiple of dp x mbs = {dp * knobs['mbs']}")
    n = batch // (dp * knobs["mbs"])
    try:
        return Strategy(dp=dp, tp=tp, pp=pp, vpp=knobs["v"], dp_shard=dp if knobs["zero"] else 1,
                        micro_batch_size=knobs["mbs"], num_micro_batches=n, schedule=schedule, zero=knobs["zero"],
                        sequence_parallel=sp, recompute=("none",) * (pp * knobs["v"]))
    except ValueError as e:
        raise PlannerError(f"--compare '{spec}': {e}") from None


def check_constraints(prof: ModelProfile, cluster: Cluster, c: Constraints) -> None:
    """One-line errors, with the arithmetic, for knobs that no plan can satisfy."""
    world, blocks = cluster.num_gpus, len(prof.blocks)
    batch = c.global_batch or default_global_batch(world)
    if c.tp is not None and c.tp not in prof.tp_degrees:
        raise PlannerError(f"--tp {c.tp}: {prof.model_name} splits into whole heads only with tp in "
                           f"{', '.join(map(str, prof.tp_degrees))}")
    if c.pp is not None and c.pp > max(1, blocks):
        raise PlannerError(f"--pp {c.pp} is deeper than the model's {blocks} blocks; use --pp <= {max(1, blocks)}")
    fixed = [(n, v) for n, v in (("tp", c.tp), ("pp", c.pp), ("dp", c.dp)) if v is not None]
    prod = 1
    for _, v in fixed:
        prod *= v
    if world % prod or (len(fixed) == 3 and prod != world):
        arith = " x ".join(f"{n}{v}" for n, v in fixed)
        raise PlannerError(f"{arith} = {prod} does not {'equal' if len(fixed) == 3 else 'divide'} the {world} GPUs")
    if c.dp is not None and batch % c.dp:
        near = sorted({batch - batch % c.dp, batch - batch % c.dp + c.dp} - {0})
        raise PlannerError(f"--global-batch {batch} is not divisible by --dp {c.dp}; use {' or '.join(map(str, near))}")
    if c.dp is not None and c.micro_batch is not None and batch % (c.dp * c.micro_batch):
        step = c.dp * c.micro_batch
        near = sorted({batch - batch % step, batch - batch % step + step} - {0})
        raise PlannerError(f"--global-batch {batch} is not divisible by dp x micro-batch = {step}; use "
                           f"{' or '.join(map(str, near))}")
    if c.zero is not None and c.zero not in (0, 2, 3):
        raise PlannerError(f"--zero {c.zero}: use 0, 2 or 3 ({EXCLUDED['zero1']})")
    if c.dp_shard is not None and c.zero == 0 and c.dp_shard > 1:
        raise PlannerError(f"--dp-shard {c.dp_shard} shards with FSDP, but --zero 0 is DDP; use --zero 2 or 3")
    if c.dp_shard is not None and c.dp is not None and c.dp % c.dp_shard:
        raise PlannerError(f"--dp-shard {c.dp_shard} does not divide --dp {c.dp}; use a divisor of {c.dp}")
    if c.zero in (2, 3) and c.dp == 1:
        raise PlannerError(f"--zero {c.zero} shards over data parallel, but --dp 1 has nothing to shard over; "
                           "drop --zero or raise --dp")
    if c.time_limit <= 0:
        raise PlannerError(f"--time-limit {c.time_limit:g}: give a positive number of seconds")
    if c.vpp is not None and c.vpp > 1 and c.schedule not in (None, "interleaved"):
        raise PlannerError(f"--vpp {c.vpp} needs --schedule interleaved, not {c.schedule}")


def _layout(prof: ModelProfile, cm: CostModel, s: Strategy) -> dict:
    mesh = cm.mesh(s)
    stages = [[m for i in rng for m in prof.layers[i].modules] for rng in cm.chunk_layers(s)]
    return {"stages": stages, "mesh": {"axes": list(mesh.axes), "sizes": list(mesh.sizes),
                                       "placement": "row-major: rank = index over axes, innermost fastest"},
            "tp_plan": dict(prof.tp_plan), "dtype": cm.dtype, "seq_len": prof.seq_len,
            "tied": [list(g) for g in prof.tied], "blocks": prof.blocks_path, "num_blocks": len(prof.blocks),
            "peak_flops": cm.device.peak(cm.dtype), "state_bytes_per_stage": _held(prof, cm, s),
            "chunk_times": _chunk_times(cm, s),
            "links": {a: link_classes(cm.cluster, mesh, a) for a, n in zip(mesh.axes, mesh.sizes) if n > 1}}


def _chunk_times(cm: CostModel, s: Strategy) -> list[dict]:
    """Per chunk and micro-batch: forward and backward seconds (recompute included) and the send to
    the next chunk: what the timeline picture replays."""
    chunks = cm.chunks(s)
    return [{"fwd": ch.fwd, "bwd": ch.bwd, "send": cm.send(s, c % s.pp, (c + 1) % s.pp, ch.out_bytes)
             if c + 1 < len(chunks) else 0.0} for c, ch in enumerate(chunks)]


def _held(prof: ModelProfile, cm: CostModel, s: Strategy) -> list[dict]:
    """What each pipeline rank holds after an optimizer step (sharded master weights, gradients, AdamW
    moments; no unsharded copies, which live only inside a step): the program reports the same."""
    zero = s.sharding
    out = []
    for rank in range(s.pp):
        layers = [prof.layers[i] for i in cm.rank_layers(s, rank)]
        st = held_after_step(layers, prof.tied, tp=s.tp, zero=zero, dp_shard=s.dp_shard)
        out.append({"param_bytes": st.weights, "grad_bytes": st.grads, "optimizer_bytes": st.optimizer})
    return out


def _explain(best: Candidate, res: SearchResult) -> str:
    e = best.estimate
    parts = sorted(e.breakdown.items(), key=lambda kv: -kv[1])
    share = ", ".join(f"{k.replace('_', ' ')} {v / e.step_time_s:.0%}" for k, v in parts[:3] if v > 0)
    mem = max(e.memory_bytes_per_stage) / e.memory_capacity_bytes
    return (f"bound by {e.bound.replace('_', ' ')} ({share}); the fullest GPU uses {mem:.0%} of its memory; "
            f"{res.stats['solved']} of {res.stats['candidates']} candidates solved, the rest pruned by lower bounds")


def plan_on(prof: ModelProfile, cluster: Cluster, c: Constraints, compare: str | None = None, progress=None) -> Plan:
    """Search one cluster and return the plan (raises PlannerError when nothing fits)."""
    check_constraints(prof, cluster, c)
    cm = CostModel(prof, cluster, dtype=prof.dtype)
    batch = c.global_batch or default_global_batch(cluster.num_gpus)
    res = search(cm, replace(c, global_batch=batch), progress)
    if res.best is None:
        raise PlannerError(res.infeasible_reason)
    best = res.best
    other = None
    if compare:
        fixed = evaluate_fixed(cm, parse_layout(compare, prof, cluster.num_gpus, batch), batch)
        why = _compare_note(best, fixed)
        other = Alternative(fixed.strategy, fixed.estimate, why)
    flops = (prof.fwd_flops + prof.bwd_flops) * batch / prof.micro_batch
    model = {"ref": prof.ref, "name": prof.model_name, "params": prof.params, "layers": len(prof.layers),
             "blocks": len(prof.blocks), "flops_per_step": flops, "tp_degrees": list(prof.tp_degrees)}
    devices = list(cluster.devices)
    clus = {"name": cluster.name, "gpu": devices[0], "gpus_per_node": cluster.gpus_per_node,
            "nodes": len(cluster.nodes), "gpus": cluster.num_gpus}
    if len(set(devices)) > 1:
        clus["node_gpus"] = devices
    solver = {k: res.stats[k] for k in ("wall_s", "status", "gap", "candidates", "pruned", "solved")}
    solver.update({"did_not_fit": res.stats["did_not_fit"], "excluded": res.stats["excluded"],
                   "not_searched": res.stats["not_searched"]})
    return Plan(model=model, cluster=clus, global_batch=batch, strategy=best.strategy, estimate=best.estimate,
                layout=_layout(prof, cm, best.strategy),
                runner_ups=tuple(Alternative(r.strategy, r.estimate, r.why_not) for r in res.runner_ups),
                solver=solver, explanation=_explain(best, res), comparison=other)


def _compare_note(best: Candidate, fixed: Candidate) -> str:
    if fixed.estimate is None:
        return fixed.why_not or "does not fit"
    if not fixed.estimate.feasible:
        return "does not fit in memory"
    a, b = best.estimate, fixed.estimate
    diffs = {k: b.breakdown[k] - a.breakdown[k] for k in a.breakdown}
    big = sorted(diffs.items(), key=lambda kv: -abs(kv[1]))[:2]
    parts = ", ".join(f"{k.replace('_', ' ')} {v:+.3g} s" for k, v in big)
    return f"{b.step_time_s / a.step_time_s - 1:+.1%}: {parts}"


def _prepare(model: str, clusters: list[Cluster], dtype: str | None, knobs: dict) -> tuple[ModelProfile, Constraints]:
    """Profile once (float32 when every device is a CPU) and build the constraints; without
    `global_batch`, every cluster trains the same batch (8 per GPU of the largest)."""
    cpu = all(set(c.devices) == {"cpu"} for c in clusters)
    prof = profile(model, micro_batch=1, dtype=dtype or ("float32" if cpu else "bfloat16"))
    if knobs.get("global_batch") is None:
        knobs = {**knobs, "global_batch": default_global_batch(max(c.num_gpus for c in clusters))}
    try:
        return prof, Constraints(**knobs)
    except TypeError as e:
        raise PlannerError(f"plan(): {e}") from None


def plan_many(model: str, gpus: str, gpu: str | None = None, *, dtype: str | None = None, progress=None,
              **knobs) -> list[Plan]:
    """One plan per cluster of a comma list (`8x6,8x12`), the model profiled once and the same global
    batch for all."""
    clusters = parse_gpus(gpus, gpu)
    prof, cons = _prepare(model, clusters, dtype, knobs)
    return [plan_on(prof, c, cons, None, progress) for c in clusters]


def plan(model: str, gpus: str = "8", gpu: str | None = None, *, compare: str | None = None,
         dtype: str | None = None, progress=None, **knobs) -> Plan:
    """Plan `path.py[:factory]` on `gpus` ("8x6", "8", or a cluster .toml) with any knob fixed
    (tp, pp, dp, vpp, micro_batch, schedule, zero, dp_shard, recompute, sequence_parallel,
    tp_across_nodes, global_batch, time_limit)."""
    clusters = parse_gpus(gpus, gpu)
    if len(clusters) != 1:
        raise PlannerError(f"plan() takes one cluster; '{gpus}' gives {len(clusters)} (use plan_many)")
    prof, cons = _prepare(model, clusters, dtype, knobs)
    return plan_on(prof, clusters[0], cons, compare, progress)
