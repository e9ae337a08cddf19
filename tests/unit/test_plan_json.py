"""plan.json across schema versions: a file written by the planner before the layout move (schema 1,
GPT-3 13B on 4 DGX A100 with a compared layout, kept verbatim in data/) still loads, reports, emits,
and is written back as schema 2 with the cost-only keys moved to the estimate and nothing lost."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import planner
from conftest import EXAMPLES
from planner import report
from planner.program.emit import constants, emit
from planner.types.estimate import ChunkTime, HeldBytes

OLD = Path(__file__).resolve().parent / "data" / "plan-schema1.json"
MOVED = {"peak_flops": "peak_flops", "state_bytes_per_stage": "held_bytes_per_pp_rank",
         "chunk_times": "chunk_times", "links": "links"}


@pytest.fixture(scope="module")
def old() -> dict:
    return json.loads(OLD.read_text())


def test_schema1_loads_with_every_value(old):
    plan = planner.Plan.load(OLD)
    assert old["schema"] == 1 and plan.model.ref == old["model"]["ref"] and plan.solver.status == "OPTIMAL"
    e = plan.estimate
    assert e.peak_flops == old["strategy"]["peak_flops"] > 0
    assert e.held_bytes_per_pp_rank == tuple(HeldBytes(**h) for h in old["strategy"]["state_bytes_per_stage"])
    assert e.chunk_times == tuple(ChunkTime(**t) for t in old["strategy"]["chunk_times"])
    assert e.links == old["strategy"]["links"] and e.links
    assert list(e.memory_bytes_per_pp_rank) == old["estimate"]["memory_bytes_per_stage"]
    assert plan.layout.stages == old["strategy"]["stages"] and plan.comparison is not None


def test_schema1_is_rewritten_as_schema2_without_loss(old):
    new = json.loads(planner.Plan.load(OLD).to_json())  # what a rewritten file holds
    assert new["schema"] == 2
    for old_key, new_key in MOVED.items():
        assert old_key not in new["strategy"]
        assert new["estimate"][new_key] == old["strategy"][old_key]
    strategy = {k: v for k, v in old["strategy"].items() if k not in MOVED}
    assert new["strategy"] == strategy
    for key in ("model", "cluster", "global_batch", "solver", "explanation"):
        assert new[key] == old[key], key
    # plans written before the memory fraction existed could use the whole device
    assert new["estimate"]["memory_limit_bytes"] == old["estimate"]["memory_capacity_bytes"]
    added = {*MOVED.values(), "memory_limit_bytes"}
    assert {k: v for k, v in new["estimate"].items() if k not in added} == old["estimate"]
    # runner-ups lost only the unused mesh axis order of schema 1's strategies
    for a, b in zip(new["runner_ups"], old["runner_ups"]):
        assert a["strategy"] == {k: v for k, v in b["strategy"].items() if k != "mesh"}
        assert a["estimate"] == b["estimate"] and a["why_not"] == b["why_not"]
    again = planner.Plan.from_json(json.dumps(new))
    assert again == planner.Plan.load(OLD) and json.loads(again.to_json()) == new


def test_schema1_reports_and_emits(tmp_path):
    plan = planner.Plan.load(OLD)
    text = report.explain(plan)
    assert "tp8-pp2-dp2" in text and "solver   OPTIMAL" in text and "links: " in text
    data = report.draw_timeline(plan, tmp_path / "t.svg")
    assert len(data["rows"]) == plan.strategy.pp
    d = emit(plan, tmp_path / "prog", model_path=EXAMPLES / "gpt.py")
    block = (d / "train.py").read_text()
    block = block[block.index("# --- plan constants"):block.index("# --- end of plan constants")]
    values: dict = {}
    exec(compile(ast.parse(block), "constants", "exec"), {}, values)
    assert values == constants(plan, "gpt.py") and values["PEAK_FLOPS"] == plan.estimate.peak_flops
