"""The emitted directory: what it holds, that it never needs `planner`, and that it refuses to clobber
a user's files. Also pins each combination torch 2.13 gets silently wrong (TORCH_NOTES) to the place
that avoids it."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import planner
from planner.program import runtime
from planner.program.emit import constants, emit
from planner.errors import PlannerError
from planner.types.strategy import EXCLUDED

ROOT = Path(__file__).resolve().parents[2]
GPT = ROOT / "examples" / "gpt.py"


@pytest.fixture(scope="module")
def plan():
    return planner.plan(f"{GPT}:tiny", "8", "cpu", global_batch=8, dp=2, tp=2, pp=2, zero=2, schedule="interleaved")


def test_directory_contents_and_verbatim_runtime(plan, tmp_path):
    d = emit(plan, tmp_path / "out")
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "gpt.py", "launch.sh", "plan.json",
                                                   "planner_runtime", "slurm.sbatch", "train.py"]
    package = Path(runtime.__file__).parent
    shipped = sorted(f.name for f in (d / "planner_runtime").iterdir())
    assert shipped == sorted(f.name for f in package.glob("*.py")) and "__init__.py" in shipped
    for name in shipped:
        assert (d / "planner_runtime" / name).read_text() == (package / name).read_text(), name
    assert (d / "gpt.py").read_bytes() == GPT.read_bytes()
    assert planner.Plan.load(d / "plan.json") == plan
    for name in ["train.py", *(f"planner_runtime/{n}" for n in shipped)]:
        source = (d / name).read_text()
        assert not re.search(r"^\s*(import|from)\s+planner\b", source, re.M), name
    assert "Launch:  bash launch.sh --cpu\n" in (d / "train.py").read_text()  # a CPU plan on one node


def test_constants_block_is_the_plan(plan, tmp_path):
    d = emit(plan, tmp_path / "out")
    text = (d / "train.py").read_text()
    block = text[text.index("# --- plan constants"):text.index("# --- end of plan constants")]
    values: dict = {}
    exec(compile(ast.parse(block), "constants", "exec"), {}, values)
    assert values == constants(plan, "gpt.py")
    assert values["STAGES"] == plan.layout.stages and values["MESH_SIZES"] == (2, 2, 2)
    assert values["MESH_AXES"] == ("pp", "dp", "tp") and len(values["RECOMPUTE"]) == len(plan.strategy.recompute)


def test_refuses_to_overwrite(plan, tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    (d / "mine.txt").write_text("the user's")
    with pytest.raises(PlannerError, match="not empty.*force=True"):
        emit(plan, d)
    emit(plan, d, force=True)
    assert (d / "mine.txt").read_text() == "the user's"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PlannerError, match="is a file"):
        emit(plan, tmp_path / "file")


def test_cli_emit_and_help(tmp_path):
    out = tmp_path / "prog"
    cmd = [sys.executable, str(ROOT / "cli.py"), f"{GPT}:tiny", "--gpus", "2", "--gpu", "cpu", "--dp", "2",
           "--global-batch", "4", "--emit", str(out), "--quiet"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    helptext = subprocess.run([sys.executable, str(out / "train.py"), "--help"], capture_output=True, text=True,
                              timeout=120)
    for flag in ("--steps", "--resume", "--checkpoint-every", "--metrics", "--export", "--init-from"):
        assert flag in helptext.stdout


def test_launch_sh_checks_node_counts(plan, tmp_path):
    d = emit(plan, tmp_path / "out")
    env = {"PATH": "/usr/bin:/bin"}
    bad = subprocess.run(["bash", str(d / "launch.sh")], env={**env, "NNODES": "3"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "NNODES x NPROC_PER_NODE = 3 x 2" in bad.stderr
    no_master = subprocess.run(["bash", str(d / "launch.sh")], env={**env, "NNODES": "2"}, capture_output=True,
                               text=True)
    assert no_master.returncode == 2 and "MASTER_ADDR" in no_master.stderr


# --- combinations torch 2.13 gets silently wrong, and where each is avoided -------------------------

def test_recompute_is_never_reentrant():
    """Reentrant checkpointing gives wrong results under pipelining: the runtime only wraps NO_REENTRANT."""
    import torch.nn as nn
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, CheckpointWrapper
    model = nn.Module()
    model.blocks = nn.ModuleDict({str(i): nn.Linear(4, 4) for i in range(3)})
    runtime.apply_recompute(model, "blocks", 1, 1)
    wrapped = [m for m in model.blocks.values() if isinstance(m, CheckpointWrapper)]
    assert len(wrapped) == 2 and all(w.checkpoint_impl == CheckpointImpl.NO_REENTRANT for w in wrapped)
    assert not isinstance(model.blocks["2"], CheckpointWrapper)


def test_zero_bubble_schedules_are_not_searched(plan):
    """FSDP2 resharding + zero-bubble schedules give wrong gradients: they are outside the search, and
    the plan says why."""
    assert "zero-bubble" in plan.solver.not_searched
    assert "wrong gradients" in EXCLUDED["zero-bubble"]
    bad = subprocess.run([sys.executable, str(ROOT / "cli.py"), f"{GPT}:tiny", "--gpus", "2", "--gpu", "cpu",
                          "--schedule", "zbv"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'zbv'" in bad.stderr


def test_no_composable_replicate_and_no_ddp_around_tensor_parallel():
    """`_composable.replicate` with TP or PP gives wrong losses silently; DDP cannot take DTensors. The
    runtime uses DDP only without TP (the dp2 x tp2 equivalence test covers the other path)."""
    package = Path(runtime.__file__).parent
    sources = "".join(f.read_text() for f in package.glob("*.py"))
    sources += (ROOT / "planner" / "program" / "templates" / "train.py").read_text()
    assert "_composable" not in sources and not re.search(r"\breplicate\(", sources)
    assert "manual_dp=ZERO == 0 and DP > 1 and TP > 1" in sources
    assert "if ZERO == 0 and DP > 1 and TP == 1:\n        part = rt.apply_ddp(" in sources


def test_data_is_a_function_of_the_step(plan, tmp_path):
    """train.py's data: the model file's dataset() when it has one (sample i of step s is item
    (s-1)*batch + i, wrapping), else seeded batch(); the same for every layout and every restart."""
    import importlib.util
    import types

    import torch
    d = emit(plan, tmp_path / "out")
    spec = importlib.util.spec_from_file_location("emitted_train", d / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    items = [(torch.full((3,), float(i)), i % 2) for i in range(10)]
    with_dataset = types.SimpleNamespace(dataset=lambda: items)
    assert train.load_dataset(with_dataset, None) is items
    with_model = types.SimpleNamespace(dataset=lambda model: model)  # dataset(model) gets the meta model
    assert train.load_dataset(with_model, "the model") == "the model"
    x, y = train.make_batch(with_dataset, None, 4, step=3, seed=0, data=items)
    assert x[:, 0].tolist() == [8.0, 9.0, 0.0, 1.0] and y.tolist() == [0, 1, 0, 1]
    synthetic = types.SimpleNamespace(batch=lambda n: (torch.randint(0, 9, (n, 2)), torch.randint(0, 9, (n,))))
    a, b = train.make_batch(synthetic, None, 4, 7, 0), train.make_batch(synthetic, None, 4, 7, 0)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], train.make_batch(synthetic, None, 4, 8, 0)[0])


def test_plan_execute_emits_then_says_what_is_missing(tmp_path):
    gpu_plan = planner.plan(f"{GPT}:tiny", "8", "a100-80gb", global_batch=8, dp=2, tp=2, pp=2)
    with pytest.raises(PlannerError, match="needs 8 GPUs and this machine has 0; pass cpu=True"):
        planner.execute(gpu_plan, tmp_path / "prog")
    assert (tmp_path / "prog" / "train.py").is_file()
    with pytest.raises(PlannerError, match="holds no train.py"):
        from planner.program.execute import execute
        execute(tmp_path)


def test_recompute_written_as_block_counts(plan):
    """The strategy's recompute syntax is resolved per chunk into (full, selective) block counts, counted
    from the chunk's own block modules (the prefix and suffix modules are not blocks)."""
    import dataclasses
    s = dataclasses.replace(plan.strategy, recompute=("full", "selective", "none", "full:1+selective"))
    values = constants(dataclasses.replace(plan, strategy=s), "gpt.py")
    assert [len([m for m in st if m.startswith("blocks.")]) for st in plan.layout.stages] == [1, 1, 1, 1]
    assert values["RECOMPUTE"] == [(1, 0), (0, 1), (0, 0), (1, 0)]
