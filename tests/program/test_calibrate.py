"""`plan calibrate --quick` on 2 ranks (gloo): it writes a device profile file whose numbers are this
machine's, and a plan made with it says so in the report and in plan.json."""
from __future__ import annotations

import json
import tomllib

import pytest

import planner
from cli import main
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
