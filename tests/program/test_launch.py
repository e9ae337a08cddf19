"""The emitted directory as a user runs it: `bash launch.sh` (real torchrun) with `planner` hidden, a
stop-and-resume that reproduces the uninterrupted run, and `plan run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import planner
from planner.program.emit import emit

ROOT = Path(__file__).resolve().parents[2]

HIDE = '''import sys
class _HidePlanner:
    """Make `import planner` fail, as on a cluster where only torch and the model file exist."""
    def find_spec(self, name, path=None, target=None):
        if name == "planner" or name.startswith("planner."):
            raise ModuleNotFoundError("planner is hidden in this test")
        return None
sys.meta_path.insert(0, _HidePlanner())
'''


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    plan = planner.plan(f"{ROOT / 'examples' / 'gpt.py'}:tiny", "2", "cpu", global_batch=8, pp=2, tp=1, dp=1,
                        schedule="1f1b", micro_batch=2)
    return emit(plan, tmp_path_factory.mktemp("launch") / "program")


@pytest.fixture(scope="module")
def hidden_env(tmp_path_factory) -> dict:
    hide = tmp_path_factory.mktemp("hide")
    (hide / "sitecustomize.py").write_text(HIDE)
    # the user's shell: this interpreter's bin (torchrun) on PATH, planner not importable
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONPATH": str(hide), "PATH": path}
    probe = subprocess.run([sys.executable, "-c", "import planner"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden" in probe.stderr
    return env


def launch(program: Path, env: dict, *args: str, out: list | None = None) -> list[dict]:
    metrics = program / f"metrics-{len(list(program.glob('metrics-*')))}.jsonl"
    proc = subprocess.run(["bash", str(program / "launch.sh"), "--cpu", "--warmup", "0", "--metrics", str(metrics),
                           *args], env=env, capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    if out is not None:
        out.append(proc.stdout)
    return [json.loads(x) for x in metrics.read_text().splitlines() if '"step"' in x]


def test_killed_rank_mid_checkpoint_restarts_from_the_last_complete_one(program, hidden_env, uninterrupted):
    """Rank 1 dies (SIGKILL) after writing its shard of step 4's checkpoint, before the commit; torchrun
    restarts the job, which resumes from step-2 (what `latest` still names) and ends with the losses of
    the uninterrupted run; no half-written checkpoint is ever loaded or left behind."""
    ck = program / "ck-fault"
    env = {**hidden_env, "MAX_RESTARTS": "1"}
    stdout: list[str] = []
    steps = launch(program, env, "--steps", "5", "--checkpoint-every", "2", "--checkpoint-dir", str(ck),
                   "--diagnose", "kill-at-checkpoint=4:1", out=stdout)
    assert "injected fault, SIGKILL before committing step-4" in stdout[0]
    assert f"resumed from {ck / 'step-2'} at step 2" in stdout[0]
    assert [s["step"] for s in steps] == [1, 2, 3, 4, 3, 4, 5]  # the first attempt got to step 4
    final = {s["step"]: s["loss"] for s in steps}  # the restarted attempt's values win
    assert [final[i] for i in range(1, 6)] == pytest.approx([s["loss"] for s in uninterrupted], rel=1e-6)
    assert (ck / "latest").read_text() == "step-5"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-2", "step-4", "step-5"]


@pytest.fixture(scope="module")
def uninterrupted(program, hidden_env) -> list[dict]:
    return launch(program, hidden_env, "--steps", "5", "--checkpoint-dir", str(program / "ck-full"))


def test_launch_sh_runs_without_planner_and_resumes_exactly(program, hidden_env, uninterrupted):
    full = uninterrupted
    assert [s["step"] for s in full] == [1, 2, 3, 4, 5]
    ck = str(program / "ck-stop")
    first = launch(program, hidden_env, "--steps", "5", "--stop-after", "3", "--checkpoint-every", "3",
                   "--checkpoint-dir", ck)
    assert (Path(ck) / "latest").read_text() == "step-3"
    rest = launch(program, hidden_env, "--steps", "5", "--resume", "--checkpoint-dir", ck)
    assert [s["step"] for s in first + rest] == [1, 2, 3, 4, 5]
    assert [s["loss"] for s in first + rest] == pytest.approx([s["loss"] for s in full], rel=1e-6)
    assert (Path(ck) / "latest").read_text() == "step-5"
    assert not list(Path(ck).glob("*.tmp"))


def test_plan_run_cpu_and_missing_gpus(program, tmp_path):
    """A CPU plan runs with `plan run DIR` as its hint says (no --cpu needed); a GPU plan on this
    GPU-less machine gets one line naming --cpu, before anything starts."""
    ok = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", str(program), "--",
                         "--steps", "1", "--checkpoint-dir", str(program / "ck-run")],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "step     1" in ok.stdout and "done: loss" in ok.stdout
    shown = subprocess.run([sys.executable, str(ROOT / "cli.py"), "show", str(program)], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "run (1 steps in metrics.jsonl)" in shown.stdout, shown.stderr
    held = [ln for ln in shown.stdout.splitlines() if ln.startswith("held bytes, pipeline rank")]
    assert len(held) == 2 and all(ln.endswith("1.000") for ln in held)  # the plan's bytes, to the byte
    gpu_plan = planner.plan(f"{ROOT / 'examples' / 'gpt.py'}:tiny", "2", "a100-80gb", global_batch=8, dp=2)
    emit(gpu_plan, tmp_path / "gpu")
    no_gpu = subprocess.run([sys.executable, str(ROOT / "cli.py"), "run", str(tmp_path / "gpu")],
                            capture_output=True, text=True, timeout=120)
    assert no_gpu.returncode == 2
    assert no_gpu.stderr.startswith("plan: error: the plan needs 2 GPUs") and "--cpu" in no_gpu.stderr


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cpu_plan_runs_as_two_launch_processes(tmp_path, hidden_env):
    """A 2-node CPU plan (2 x 2 ranks) started as its README says, one launch.sh per "node" with
    NODE_RANK 0 and 1 over loopback, trains the same losses as the whole plan on one machine."""
    plan = planner.plan(f"{ROOT / 'examples' / 'gpt.py'}:tiny", "2x2", "cpu", global_batch=8, pp=2, dp=2, tp=1,
                        schedule="1f1b", micro_batch=2)
    d = emit(plan, tmp_path / "prog")
    readme = (d / "README.md").read_text()
    assert "NNODES=2 NODE_RANK=0 MASTER_ADDR=" in readme and "NNODES=2 NODE_RANK=1 MASTER_ADDR=" in readme
    assert "--gpus-per-node" not in (d / "slurm.sbatch").read_text()  # a CPU plan asks for no GPUs
    port = _free_port()
    procs = []
    for node in (0, 1):
        env = {**hidden_env, "NNODES": "2", "NODE_RANK": str(node), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "MAX_RESTARTS": "0"}
        procs.append(subprocess.Popen(["bash", str(d / "launch.sh"), "--cpu", "--steps", "3", "--warmup", "0",
                                       "--checkpoint-dir", str(d / "ck2"), "--metrics", str(d / "two.jsonl")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/"))
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    one = launch(d, {**hidden_env, "NNODES": "1"}, "--steps", "3", "--checkpoint-dir", str(d / "ck1"))  # all 4 here
    two = [json.loads(x) for x in (d / "two.jsonl").read_text().splitlines() if '"step"' in x]
    assert [s["loss"] for s in two] == pytest.approx([s["loss"] for s in one], rel=1e-6)


def test_gpu_plan_of_two_nodes_names_two_nodes_everywhere(tmp_path):
    plan = planner.plan(f"{ROOT / 'examples' / 'gpt.py'}:tiny", "8x2", "a100-80gb", global_batch=64, time_limit=20)
    d = emit(plan, tmp_path / "prog")
    sbatch, launch_sh = (d / "slurm.sbatch").read_text(), (d / "launch.sh").read_text()
    assert "#SBATCH --nodes=2" in sbatch and "#SBATCH --gpus-per-node=8" in sbatch and "--cpu" not in sbatch
    assert "WORLD=16" in launch_sh and "NNODES=${NNODES:-2}" in launch_sh
    readme, train = (d / "README.md").read_text(), (d / "train.py").read_text()
    assert "16 ranks: 2 node(s) x 8 GPUs" in readme and "NNODES=2 NODE_RANK=1 MASTER_ADDR=" in readme
    assert "on node i of 2: NNODES=2 NODE_RANK=i" in train and "--nproc-per-node 16" not in train
    alone = subprocess.run(["bash", str(d / "launch.sh")], capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "spans 2 nodes; set MASTER_ADDR" in alone.stderr


def test_existing_output_is_refused_before_any_search(tmp_path):
    """--emit into a non-empty directory and --out onto a file fail at once, not after the search."""
    import time
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    (tmp_path / "p.json").write_text("x")
    for extra in (["--emit", str(tmp_path / "out")], ["--out", str(tmp_path / "p.json")]):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), f"{ROOT / 'examples' / 'gpt.py'}:gpt3_175b",
                               "--gpus", "8x16", *extra], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert time.perf_counter() - t0 < 10 and "--force" in proc.stderr
