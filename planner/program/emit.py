"""Emit a plan as a program directory a user can copy to a cluster where only torch and the model exist.

The directory holds `train.py` (the template `planner/program/templates/train.py` with its constants
block set from the plan), `planner_runtime/` (a verbatim copy of the package `planner/program/runtime/`),
the model file, `plan.json`, `launch.sh`, `slurm.sbatch` and a README. Nothing in it imports `planner`.
"""
from __future__ import annotations

import pprint
import re
import shutil
from importlib import resources
from pathlib import Path

from planner.errors import PlannerError
from planner.types.plan import Plan
from planner.types.strategy import parse_recompute

__all__ = ["emit", "constants", "check_target", "launch_lines"]

_BLOCK = re.compile(r"(# --- plan constants \(written by planner\) ---\n)(.*?)(# --- end of plan constants ---)", re.S)
_LINE = re.compile(r"^(?P<names>[A-Z_][A-Z_0-9, ]*?) = (?P<value>.*)$")
_RESERVED = {"train.py", "planner_runtime", "planner_runtime.py", "launch.sh", "slurm.sbatch", "plan.json", "README.md"}


def _recompute_counts(plan: Plan) -> list[tuple[int, int]]:
    """(full, selective) recomputed blocks per chunk: the strategy's recompute syntax resolved here, so
    the program reads plain numbers."""
    blocks = plan.layout.blocks
    def count(stage: list[str]) -> int:
        return sum(1 for m in stage if blocks and m.startswith(blocks + ".") and m[len(blocks) + 1:].isdigit())
    return [parse_recompute(mode, count(stage)) for mode, stage in zip(plan.strategy.recompute, plan.layout.stages)]


def constants(plan: Plan, model_file: str) -> dict[str, object]:
    """The values of train.py's constants block, by name."""
    s, lay = plan.strategy, plan.layout
    return {
        "MODEL_FILE": model_file, "FACTORY": plan.model.factory,
        "MESH_AXES": tuple(lay.mesh_axes), "MESH_SIZES": tuple(lay.mesh_sizes),
        "PP": s.pp, "VPP": s.vpp, "TP": s.tp, "DP": s.dp, "DP_SHARD": s.dp_shard if s.zero else 1,
        "ZERO": s.sharding, "SCHEDULE": s.schedule, "GLOBAL_BATCH": plan.global_batch,
        "MICRO_BATCH_SIZE": s.micro_batch_size, "NUM_MICRO_BATCHES": s.num_micro_batches,
        "SEQUENCE_PARALLEL": bool(s.sequence_parallel and s.tp > 1), "BLOCKS": lay.blocks,
        "NUM_BLOCKS": lay.num_blocks, "STAGES": [list(c) for c in lay.stages],
        "RECOMPUTE": _recompute_counts(plan), "TP_PLAN": dict(lay.tp_plan), "TIED": [list(g) for g in lay.tied],
        "DTYPE": lay.dtype, "PEAK_FLOPS": float(plan.estimate.peak_flops),
        "FLOPS_PER_STEP": float(plan.model.flops_per_step),
        "PREDICTED_STEP_S": float(plan.estimate.step_time_s),
    }


def _fill(template: str, values: dict[str, object], summary: str, hint: str) -> str:
    m = _BLOCK.search(template)
    if m is None:
        raise RuntimeError("train.py template lost its constants block")
    lines = []
    for line in m.group(2).splitlines():
        lm = _LINE.match(line)
        if not lm:
            lines.append(line)
            continue
        names = [n.strip() for n in lm.group("names").split(",")]
        if len(names) > 1:
            lines.append(f"{lm.group('names')} = {', '.join(repr(values[n]) for n in names)}")
        else:
            head = f"{names[0]} = "
            text = pprint.pformat(values[names[0]], width=100 - len(head), compact=True, sort_dicts=False)
            lines.append(head + text.replace("\n", "\n" + " " * len(head)))
    body = template[:m.start(2)] + "\n".join(lines) + "\n" + template[m.end(2):]
    return body.replace("PLAN_SUMMARY", summary, 1).replace("LAUNCH_HINT", hint, 1)


def check_target(directory: str | Path, force: bool = False) -> Path:
    """Refuse a file, or a non-empty directory unless `force` (checked before any search, too)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise PlannerError(f"{out} is a file; give a directory to emit into")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PlannerError(f"{out} is not empty; choose another directory or pass force=True to overwrite")
    return out


def launch_lines(plan: Plan) -> list[str]:
    """The commands that start the program: one line for one node, one line per node for several."""
    nodes, _ = plan.node_shape()
    flag = " --cpu" if plan.on_cpu else ""
    if nodes == 1:
        return [f"bash launch.sh{flag}"]
    lines = [f"NNODES={nodes} NODE_RANK={i} MASTER_ADDR=<node 0's address> bash launch.sh{flag}   # on node {i}"
             for i in range(min(nodes, 3))]
    if nodes > 3:
        lines.append(f"... and so on up to NODE_RANK={nodes - 1} (or: sbatch slurm.sbatch)")
    return lines


def emit(plan: Plan, directory: str | Path, *, force: bool = False, model_path: str | Path | None = None) -> Path:
    """Write the program for `plan` into `directory`; refuses a non-empty directory unless `force`."""
    out = check_target(directory, force)
    source = Path(model_path or plan.model.path)
    if not source.is_file():
        raise PlannerError(f"the plan's model file {source} is missing; emit where it exists")
    model_file = "model.py" if source.name in _RESERVED else source.name
    out.mkdir(parents=True, exist_ok=True)
    program = resources.files("planner.program")
    template = (program / "templates" / "train.py").read_text()
    (nodes, gpn), cpu = plan.node_shape(), plan.on_cpu
    hint = launch_lines(plan)[0] if nodes == 1 else f"on node i of {nodes}: NNODES={nodes} NODE_RANK=i " \
        f"MASTER_ADDR=<node 0> bash launch.sh{' --cpu' if cpu else ''}  (or sbatch slurm.sbatch)"
    (out / "train.py").write_text(_fill(template, constants(plan, model_file), plan.summary(), hint))
    _copy_runtime(program / "runtime", out / "planner_runtime")
    shutil.copyfile(source, out / model_file)
    (out / "plan.json").write_text(plan.to_json() + "\n")
    values = {"@WORLD@": str(plan.strategy.world), "@GPUS_PER_NODE@": str(gpn), "@NODES@": str(nodes),
              "@SUMMARY@": plan.summary(), "@MODEL@": plan.model.ref.rpartition("/")[2],
              "@RUN@": "\n".join(f"    {line}" for line in launch_lines(plan)),
              "@CPU_FLAG@": " --cpu" if cpu else "",
              "@SLURM_GPUS@": "#SBATCH --ntasks-per-node=1" if cpu else
              f"#SBATCH --ntasks-per-node=1\n#SBATCH --gpus-per-node={gpn}",
              "@RANKS@": f"{gpn} CPU processes" if cpu else f"{gpn} GPUs"}
    for name in ("launch.sh", "slurm.sbatch", "README.md"):
        text = (program / "templates" / name).read_text()
        for key, value in values.items():
            text = text.replace(key, value)
        (out / name).write_text(text)
    (out / "launch.sh").chmod(0o755)
    return out


def _copy_runtime(source, target: Path) -> None:
    """The runtime package, file by file (its modules import each other relatively, so the copy works
    under its new name)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    for item in source.iterdir():
        if item.name.endswith(".py"):
            (target / item.name).write_text(item.read_text())
