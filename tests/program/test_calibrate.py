"""`plan calibrate --quick` on 2 ranks (gloo): it writes a device profile file whose numbers are this
machine's, and a plan made with it says so in the report and in plan.json."""
from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import given, settings, strategies as st

import planner
from cli import main
from planner.calibration.run import failure_cause
from conftest import example


def test_calibrate_writes_a_profile_that_plans(tmp_path, capsys):
    out = tmp_path / "measured.toml"
    assert main(["calibrate", "--ranks", "2", "--quick", "--cpu", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = tomllib.loads(out.read_text())
    assert data["source"].startswith("measured ") and "2 rank(s)" in data["source"]
    assert data["peak_flops"]["fp32"] == max(r["flops"] for r in data["gemm"]) > 1e8  # a CPU core does > 0.1 TFLOP/s
    assert 1e8 < data["hbm_bandwidth"] < 1e12 and 1e-7 < data["op_overhead"] < 1e-3
    assert data["node"]["gpus_per_node"] == 2 and data["node"]["intra"]["latency"] > 0
    assert {c["op"] for c in data["collective"]} >= {"all_reduce", "all_gather", "p2p"}
    plan = planner.plan(example("gpt.py:tiny"), "2", str(out), global_batch=8, dp=2)
    assert plan.cluster.gpu == "cpu" and plan.cluster.device_profile == data["source"]
    assert plan.layout.dtype == "float32"  # planned as a CPU
    assert "device profile measured" in planner.report.explain(plan)
    assert json.loads(plan.to_json())["cluster"]["device_profile"] == data["source"]
    assert planner.Plan.from_json(plan.to_json()) == plan
    with pytest.raises(planner.PlannerError, match="exists"):
        planner.calibrate(out, ranks=2, quick=True)


FAILING_WORKER = '''
import os
import signal
import torch.distributed as dist
dist.init_process_group("gloo")
if dist.get_rank() == 1:
    if os.environ.get("HOW") == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError("no GEMM kernel for 4096x256x256")
dist.barrier()  # rank 0 then fails too, of a closed connection: not the cause
'''


@pytest.mark.parametrize("how, cause", [("raised", "rank 1: RuntimeError: no GEMM kernel for 4096x256x256"),
                                        ("killed", "rank 1: Signal 9 (SIGKILL) received by PID")])
def test_a_failed_calibration_says_why(tmp_path, monkeypatch, how, cause):
    """torchrun's own output ends in a footer of '=' lines and its ChildFailedError, and the rank that
    waited on the failed one raises a gloo error of its own: the message names the first-failed rank's
    exception or signal. A stand-in worker package in the working directory, which `-m` imports first."""
    pkg = tmp_path / "planner" / "calibration"
    pkg.mkdir(parents=True)
    for init in (tmp_path / "planner" / "__init__.py", pkg / "__init__.py"):
        init.write_text("")
    (pkg / "worker.py").write_text(FAILING_WORKER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOW", how)
    with pytest.raises(planner.PlannerError, match="the calibration run failed") as err:
        planner.calibrate(tmp_path / "out.toml", ranks=2, cpu=True)
    assert cause in str(err.value) and "Connection closed" not in str(err.value)
    assert not (tmp_path / "out.toml").exists()


NOISE = st.lists(st.text(st.characters(blacklist_characters="[]:\n\r", blacklist_categories=("Cs",)), max_size=40),
                 max_size=8)


@settings(max_examples=60, deadline=None)
@given(before=NOISE, between=NOISE, rank=st.integers(0, 7), other=st.integers(0, 7))
def test_failure_cause_finds_the_first_failed_ranks_error_among_any_other_lines(before, between, rank, other):
    """Whatever other lines a run prints (log lines, warnings, another rank's later error), the cause is
    the last exception of the rank torchrun's footer names, and it is one line."""
    lines = [*before, f"[rank{rank}]: ValueError: shape {rank} failed", *between,
             f"[rank{other}]: RuntimeError: Connection closed by peer" if other != rank else "",
             "Root Cause (first observed failure):", "[0]:", f"  rank      : {rank} (local_rank: {rank})",
             "=" * 40]
    why = failure_cause("\n".join(lines))
    assert why == f"rank {rank}: ValueError: shape {rank} failed"
    assert "\n" not in failure_cause("\n".join(before)) and failure_cause("\n".join(before))


def test_failure_cause_without_torchruns_footer_names_no_rank():
    """A run that fails before torchrun starts any rank (torch not importable) prints a plain traceback
    and no footer: the cause is its exception, with no rank made up for it."""
    out = 'Traceback (most recent call last):\n  File "<frozen runpy>", line 198\nModuleNotFoundError: No module named torch'
    assert failure_cause(out) == "ModuleNotFoundError: No module named torch"
