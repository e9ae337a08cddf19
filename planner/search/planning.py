"""`plan_on`: check the knobs, search one cluster, and wrap the result in a `Plan`."""
from __future__ import annotations

from dataclasses import replace

from planner.cluster.graph import Cluster
from planner.cost.model import CostModel
from planner.errors import PlannerError
from planner.search.pricing import Candidate, evaluate_fixed
from planner.search.search import SearchResult, search
from planner.search.space import Constraints, check_constraints, default_global_batch, parse_layout
from planner.types.plan import Alternative, ClusterSummary, Layout, ModelSummary, Plan, WhatIf
from planner.types.profile import ModelProfile
from planner.types.strategy import Strategy

__all__ = ["plan_on"]


def plan_on(prof: ModelProfile, cluster: Cluster, c: Constraints, compare: str | None = None, progress=None) -> Plan:
    """Search one cluster and return the plan (raises PlannerError when nothing fits)."""
    check_constraints(prof, cluster, c)
    cm = CostModel(prof, cluster, dtype=prof.dtype, memory_fraction=c.memory_fraction)
    batch = c.global_batch or default_global_batch(cluster.num_gpus)
    res = search(cm, replace(c, global_batch=batch), progress)
    if res.best is None:
        raise PlannerError(res.infeasible_reason)
    best = res.best
    other = None
    if compare:
        fixed = evaluate_fixed(cm, parse_layout(compare, prof, cluster.num_gpus, batch), batch, limit=c.time_limit)
        other = Alternative(fixed.strategy, fixed.estimate, _compare_note(best, fixed))
    return Plan(model=_model(prof, batch), cluster=_cluster(cluster), global_batch=batch, strategy=best.strategy,
                estimate=cm.with_details(best.strategy, best.estimate), layout=_layout(prof, cm, best.strategy),
                runner_ups=tuple(Alternative(r.strategy, r.estimate, r.why_not) for r in res.runner_ups),
                solver=res.stats, explanation=_explain(best, res), comparison=other,
                what_if=what_if(prof, cluster, c, best, res.runner_ups, batch))


WHAT_IFS = (("communication 30% slower", dict(comm_slowdown=1.3)), ("GEMMs 10% slower", dict(gemm_slowdown=1.1)))
"""The price errors a plan is checked against: link and collective efficiency is what the datasheets and
nccl-tests figures say least reliably, GEMM efficiency the next (see benchmarks/fidelity.py)."""


def what_if(prof: ModelProfile, cluster: Cluster, c: Constraints, best: Candidate, runner_ups: list[Candidate],
            batch: int) -> tuple[WhatIf, ...]:
    """The plan and the best runner-up (as placed: same stages and recompute) re-priced under each of
    WHAT_IFS, so the report can say whether the ranking survives the cost model being that wrong."""
    other = next((r for r in runner_ups if r.estimate is not None and r.estimate.feasible), None)
    out = []
    for case, slow in WHAT_IFS:
        cm = CostModel(prof, cluster, dtype=prof.dtype, memory_fraction=c.memory_fraction, **slow)
        out.append(WhatIf(case=case, step_time_s=cm.estimate(best.strategy, batch).step_time_s,
                          runner_up=other.strategy.label() if other else "",
                          runner_up_step_time_s=cm.estimate(other.strategy, batch).step_time_s if other else None))
    return tuple(out)


def _model(prof: ModelProfile, batch: int) -> ModelSummary:
    return ModelSummary(ref=prof.ref, name=prof.model_name, params=prof.params, layers=len(prof.layers),
                        blocks=len(prof.blocks), flops_per_step=(prof.fwd_flops + prof.bwd_flops) * batch / prof.micro_batch,
                        tp_degrees=tuple(prof.tp_degrees))


def _cluster(cluster: Cluster) -> ClusterSummary:
    devices = tuple(cluster.devices)
    sources = dict.fromkeys(cluster.device_of(r).source for r in cluster.first_ranks)
    return ClusterSummary(name=cluster.name, gpu=devices[0], gpus_per_node=cluster.gpus_per_node,
                          nodes=len(cluster.nodes), gpus=cluster.num_gpus,
                          node_gpus=devices if len(set(devices)) > 1 else (), device_profile="; ".join(sources))


def _layout(prof: ModelProfile, cm: CostModel, s: Strategy) -> Layout:
    mesh = cm.mesh(s)
    return Layout(stages=[[m for i in rng for m in prof.layers[i].modules] for rng in cm.chunk_layers(s)],
                  mesh_axes=tuple(mesh.axes), mesh_sizes=tuple(mesh.sizes), tp_plan=dict(prof.tp_plan),
                  dtype=cm.dtype, seq_len=prof.seq_len, tied=[list(g) for g in prof.tied],
                  blocks=prof.blocks_path, num_blocks=len(prof.blocks))


def _explain(best: Candidate, res: SearchResult) -> str:
    e = best.estimate
    parts = sorted(e.breakdown.items(), key=lambda kv: -kv[1])
    share = ", ".join(f"{k.replace('_', ' ')} {v / e.step_time_s:.0%}" for k, v in parts[:3] if v > 0)
    mem = max(e.memory_bytes_per_pp_rank) / e.memory_capacity_bytes
    st = res.stats
    solved = (f"all {st.candidates} candidates solved" if st.solved == st.candidates else
              f"{st.solved} of {st.candidates} candidates solved, the rest pruned by lower bounds")
    return (f"bound by {e.bound.replace('_', ' ')} ({share}); the fullest GPU uses {mem:.0%} of its memory "
            f"(plans may use {e.memory_limit_bytes / e.memory_capacity_bytes:.0%}); {solved}")


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
