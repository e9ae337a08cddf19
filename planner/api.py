"""The public functions: profile a model, plan it on one cluster or several, look at a cluster, run a
program. Library errors name the functions' parameters (`tp=3`); only the CLI speaks of flags."""
from __future__ import annotations

from pathlib import Path

from planner.calibration.run import calibrate
from planner.cluster.detect import detect
from planner.cluster.graph import Cluster, parse_gpus
from planner.cluster.hardware import DEFAULT_GPU
from planner.cluster.placement import Mesh, place
from planner.errors import PlannerError
from planner.errors import refuse_overwrite as check_output  # what Plan.save checks, checked up front
from planner.load.fingerprint import model_fingerprint
from planner.load.model_file import ModelSource, build_meta, load
from planner.program.emit import check_target as check_emit_target  # what emit checks, up front
from planner.program.emit import emit
from planner.program.execute import execute as _execute_dir, run_plan
from planner.profiling.cache import load_cached, profile_key, store
from planner.profiling.profiler import profile_model
from planner.search.planning import plan_on
from planner.search.space import Constraints, default_global_batch
from planner.types.plan import Plan
from planner.types.profile import ModelProfile

__all__ = ["profile", "plan", "plan_many", "clusters", "cluster_mesh", "run", "emit", "execute", "detect", "calibrate", "check_output", "check_emit_target", "DTYPES", "DEFAULT_GPU"]

DTYPES = ("bfloat16", "float16", "float32")


def profile(model: str | ModelSource, micro_batch: int = 1, dtype: str = "bfloat16",
            use_cache: bool = True) -> ModelProfile:
    """Profile `path.py[:factory]` (or a loaded source) per layer, reusing a cached profile if any."""
    if micro_batch < 1:
        raise PlannerError(f"micro_batch={micro_batch}: must be a positive number of samples")
    if dtype not in DTYPES:
        raise PlannerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    source = load(model) if isinstance(model, str) else model
    built = model_fingerprint(source, build_meta(source), micro_batch)
    key = profile_key(source.file_sha256, built, source.factory, micro_batch, dtype)
    cached = load_cached(key) if use_cache else None
    if cached is not None and cached.ref == source.ref:
        return cached
    result = profile_model(source, micro_batch=micro_batch, dtype=dtype)
    store(key, result)
    return result


def clusters(gpus: str, gpu: str | None = None) -> list[Cluster]:
    """The clusters of `gpus`: "8x6" (8 GPUs per node, 6 nodes), "8", a cluster .toml, or a comma list."""
    return parse_gpus(gpus, gpu)


def cluster_mesh(cluster: Cluster, tp: int | None = None, pp: int = 1) -> Mesh:
    """The pp x dp x tp mesh placed on `cluster` (tp defaults to the GPUs of a node, dp takes the rest)."""
    tp = tp or cluster.gpus_per_node
    rest = cluster.num_gpus // (tp * pp)
    if rest * tp * pp != cluster.num_gpus:
        raise PlannerError(f"tp={tp} x pp={pp} does not divide the {cluster.num_gpus} GPUs of {cluster.name}")
    return place(cluster, {"pp": pp, "dp": rest, "tp": tp})


def _prepare(model: str, found: list[Cluster], dtype: str | None, knobs: dict) -> tuple[ModelProfile, Constraints]:
    """Profile once (float32 when every device is a CPU) and build the constraints; without
    `global_batch`, every cluster trains the same batch (8 per GPU of the largest)."""
    cpu = all(set(c.devices) == {"cpu"} for c in found)
    prof = profile(model, micro_batch=1, dtype=dtype or ("float32" if cpu else "bfloat16"))
    if knobs.get("global_batch") is None:
        knobs = {**knobs, "global_batch": default_global_batch(max(c.num_gpus for c in found))}
    try:
        return prof, Constraints(**knobs)
    except TypeError as e:
        raise PlannerError(f"plan(): {e}") from None


def plan_many(model: str, gpus: str, gpu: str | None = None, *, dtype: str | None = None, progress=None,
              **knobs) -> list[Plan]:
    """One plan per cluster of a comma list (`8x6,8x12`), the model profiled once and the same global
    batch for all."""
    found = parse_gpus(gpus, gpu)
    prof, cons = _prepare(model, found, dtype, knobs)
    return [plan_on(prof, c, cons, None, progress) for c in found]


def plan(model: str, gpus: str = "8", gpu: str | None = None, *, compare: str | None = None,
         dtype: str | None = None, progress=None, **knobs) -> Plan:
    """Plan `path.py[:factory]` on `gpus` ("8x6", "8", or a cluster .toml) with any knob fixed
    (tp, pp, dp, vpp, micro_batch, schedule, zero, dp_shard, recompute, sequence_parallel,
    tp_across_nodes, global_batch, time_limit) and the share of each GPU's memory a plan may fill
    (memory_fraction, default 0.9 after the runtime reserve)."""
    found = parse_gpus(gpus, gpu)
    if len(found) != 1:
        raise PlannerError(f"plan() takes one cluster; gpus='{gpus}' gives {len(found)} (use plan_many)")
    prof, cons = _prepare(model, found, dtype, knobs)
    return plan_on(prof, found[0], cons, compare, progress)


def run(directory: str | Path, *, cpu: bool = False, args: tuple[str, ...] | list[str] = ()) -> int:
    """Run an emitted program directory with torchrun on this machine; its exit code."""
    return _execute_dir(directory, cpu=cpu, args=args)


def execute(plan: Plan, directory: str | Path, *, cpu: bool = False, args: tuple[str, ...] = ()) -> int:
    """Emit `plan` into `directory` (unless a program is there already) and run it; its exit code."""
    return run_plan(plan, directory, cpu=cpu, args=args)

