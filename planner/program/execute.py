"""Run an emitted program directory locally with torchrun, streaming its output."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from planner.errors import PlannerError
from planner.program.emit import emit
from planner.types.plan import Plan

__all__ = ["execute", "run_plan"]


def execute(directory: str | Path, *, cpu: bool = False, args: list[str] | tuple[str, ...] = ()) -> int:
    """torchrun `train.py` in `directory` with one process per planned rank on this machine; returns its
    exit code. A plan made for CPUs runs with gloo; otherwise, without `cpu`, the machine must have as
    many GPUs as the plan has ranks (a multi-node plan runs with launch.sh on each node instead)."""
    d = Path(directory)
    if not (d / "train.py").is_file():
        raise PlannerError(f"{d} holds no train.py; emit a plan there first")
    plan = Plan.load(d / "plan.json")
    world, cpu = plan.strategy.world, cpu or plan.on_cpu
    if not cpu:
        import torch
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if have < world:
            raise PlannerError(f"the plan needs {world} GPUs and this machine has {have}; pass cpu=True to simulate "
                               f"it with {world} gloo processes, or run launch.sh on each node of the cluster")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", str(world), "train.py", *(["--cpu"] if cpu else []), *args]
    return subprocess.run(cmd, cwd=d).returncode


def run_plan(plan: Plan, directory: str | Path, *, cpu: bool = False, args: tuple[str, ...] = ()) -> int:
    """Emit `plan` into `directory` unless a program is already there, then `execute` it."""
    if not (Path(directory) / "train.py").is_file():
        emit(plan, directory)
    return execute(directory, cpu=cpu, args=args)
