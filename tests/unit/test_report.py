"""What a person reads: the printed plan (snapshots), --json, pictures (checked from their data and
file headers, not pixels), the scaling table, and --help."""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

import planner
from cli import main, parser
from planner.report.pictures import memory_data, timeline_data
from planner import report
from planner.report.plan import print_plan

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
CASES = {
    "gpt-tiny-8cpu": (f"{ROOT / 'examples' / 'gpt.py'}:tiny", "8", dict(global_batch=16, pp=2, tp=2)),
    "llama-tiny-4x2cpu": (f"{ROOT / 'examples' / 'llama.py'}:tiny", "4x2", dict(global_batch=16)),
}


@pytest.fixture(scope="module")
def plans():
    return {name: planner.plan(ref, gpus, "cpu", **knobs) for name, (ref, gpus, knobs) in CASES.items()}


def _stable(text: str) -> str:
    """The report without what differs between machines and runs: the checkout path, the wall time."""
    text = text.replace(str(ROOT), "<repo>")
    return re.sub(r", [0-9.]+ s$", ", <wall> s", text, flags=re.M)


@pytest.mark.parametrize("name", CASES)
def test_printed_plan_snapshot(plans, name):
    buf = io.StringIO()
    print_plan(plans[name], buf)
    text = _stable(buf.getvalue())
    assert max(len(line) for line in text.splitlines()) <= 100
    snap = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snap.write_text(text)
    assert snap.exists(), f"{snap} is missing: write it with UPDATE_SNAPSHOTS=1 and check it in"
    assert text == snap.read_text()
    order = ["model ", "cluster ", "plan ", "predict ", "step time", "stages", "solver "]
    positions = [text.index(k) for k in order]
    assert positions == sorted(positions)


def test_a_time_limited_plan_says_which_layouts_hold_its_gap(plans):
    """Below the solver line, a TIME_LIMIT plan names the layouts left open and their bounds (the least
    first, at most those the stats hold, with the count of all); a proved plan prints no such line."""
    from dataclasses import replace
    p = plans["llama-tiny-4x2cpu"]
    assert p.solver.status == "OPTIMAL" and "open " not in _stable(report.explain(p))
    opened = {"tp1-pp2-dp4 mbs1x4 interleavedv2 zero2": 1.25e-4, "tp2-pp2-dp2 mbs1x8 1f1b zero0": 1.5e-4}
    cut = replace(p, solver=replace(p.solver, status="TIME_LIMIT", gap=0.1, open=opened, open_total=7))
    lines = report.explain(cut).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("open     "))
    assert lines[at - 1].startswith("solver   TIME_LIMIT (gap 10.00%)")
    said = " ".join(" ".join(lines[at:at + 3]).split())
    assert said.startswith("open 7 layouts not proved slower than the plan (the 2 least shown): "
                           "tp1-pp2-dp4 mbs1x4 interleavedv2 zero2 >= 0.000125 s/step, tp2-pp2-dp2")


def test_json_round_trips_into_an_equal_plan(capsys):
    ref, gpus, _ = CASES["gpt-tiny-8cpu"]
    assert main([ref, "--gpus", gpus, "--gpu", "cpu", "--global-batch", "16", "--json"]) == 0
    text = capsys.readouterr().out
    plan = planner.Plan.from_json(text)
    assert planner.Plan.from_json(plan.to_json()) == plan
    assert json.loads(text)["strategy"]["stages"] == plan.layout.stages


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_timeline_has_a_row_per_stage_and_a_forward_block_per_micro_batch(plans, tmp_path, suffix, magic):
    p = plans["gpt-tiny-8cpu"]
    s = p.strategy
    data = report.draw_timeline(p, tmp_path / f"t{suffix}")
    assert (tmp_path / f"t{suffix}").read_bytes().startswith(magic)
    assert len(data["rows"]) == s.pp
    for row in data["rows"]:
        forwards = [b for b in row if b["kind"] == "F"]
        assert len(forwards) == s.num_micro_batches * s.vpp
        assert sorted({b["micro_batch"] for b in forwards}) == list(range(s.num_micro_batches))
        assert all(a["end"] <= b["start"] + 1e-12 for a, b in zip(row, row[1:]))  # one thing at a time
    assert data["makespan"] == pytest.approx(max(b["end"] for r in data["rows"] for b in r))
    if s.pp > 1:
        assert data["sends"]


def test_timeline_of_a_plain_1f1b_plan(tmp_path):
    p = planner.plan(f"{ROOT / 'examples' / 'gpt.py'}:tiny", "4", "cpu", global_batch=16, pp=4, tp=1,
                     schedule="1f1b", micro_batch=1)
    data = timeline_data(p)
    assert len(data["rows"]) == 4
    assert all(sum(b["kind"] == "F" for b in row) == p.strategy.num_micro_batches for row in data["rows"])
    assert data["rows"][3][0]["start"] > data["rows"][0][0]["start"]  # the bubble: stage 3 waits


def test_memory_chart(plans, tmp_path):
    p = plans["gpt-tiny-8cpu"]
    data = report.draw_memory(p, tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG")
    assert len(data["stages"]) == p.strategy.pp
    assert [sum(st.values()) for st in data["stages"]] == list(p.estimate.memory_bytes_per_pp_rank)
    assert memory_data(p)["capacity"] == p.estimate.memory_capacity_bytes


def test_scaling_table_and_plot(tmp_path, capsys):
    ref = CASES["gpt-tiny-8cpu"][0]
    assert main([ref, "--gpus", "2,4,8", "--gpu", "cpu", "--global-batch", "16", "--scaling",
                 str(tmp_path / "s.svg")]) == 0
    out = capsys.readouterr().out
    assert "scaling (global batch 16)" in out and "GPU-h/1B tok" in out
    assert len([ln for ln in out.splitlines() if re.match(r"^(2|4|8): tp", ln)]) == 3
    assert (tmp_path / "s.svg").read_bytes().startswith(b"<?xml")


def test_every_option_lists_its_default():
    root = parser()
    subparsers = next(a for a in root._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.option_strings[-1] in text, (name, action.dest)
                assert action.help and "%(default)" not in action.help
        formatter = sub._get_formatter()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":  # exactly one default per option
                assert formatter._get_help_string(action).count("(default:") == 1, (name, action.dest)


def test_progress_on_a_terminal_only_after_a_second(capsys):
    from planner.report import Progress as _Progress
    quick = _Progress(tty=True)
    quick("search", 5, 10)
    quick.done()
    assert capsys.readouterr().err == ""
    slow = _Progress(tty=True)
    slow.t0 -= 2.0
    slow("search", 5, 10)
    slow.done()
    err = capsys.readouterr()
    assert err.out == "" and "plan: search: 5/10 candidates" in err.err and err.err.endswith("\r")
    piped = _Progress(tty=False)
    piped.t0 -= 2.0
    piped("search", 5, 10)
    piped.done()
    assert capsys.readouterr().err == ""


def test_progress_line_keeps_its_clock_while_nothing_reports(capsys):
    """A solver round can run for long without a report: the line is rewritten with the elapsed time at
    least every `every` seconds all the same, and never after `done()`."""
    import time
    from planner.report import Progress as _Progress
    p = _Progress(tty=True, every=0.05)
    p.t0 -= 2.0
    p("search", 1, 3)
    time.sleep(0.5)
    p.done()
    err = capsys.readouterr().err
    time.sleep(0.2)
    assert err.count("plan: search: 1/3 candidates") >= 4 and capsys.readouterr().err == ""
