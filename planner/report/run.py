"""A run beside its plan: what the emitted program measured (`metrics.jsonl`) next to what the plan
predicted, for `plan show RUN_DIR`."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import TextIO

from planner.report.text import gib, table
from planner.types.plan import Plan

__all__ = ["read_metrics", "last_run", "run_rows", "print_run"]


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (unreadable lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def last_run(records: list[dict]) -> list[dict]:
    """The records of the latest run in a metrics.jsonl that several runs appended to: from the first
    `built` event of the last group of them (every rank logs one when it starts)."""
    starts = [i for i, r in enumerate(records) if r.get("event") == "built"
              and (i == 0 or records[i - 1].get("event") != "built")]
    return records[starts[-1]:] if starts else records


def run_rows(plan: Plan, records: list[dict]) -> list[list[str]]:
    """[what, predicted, measured, measured / predicted] rows: step time (median after the first step),
    tokens/s, peak memory of the fullest GPU, and each pipeline rank's held bytes."""
    records = last_run(records)
    steps = [r for r in records if "step" in r and "loss" in r]
    if not steps:
        return []
    e = plan.estimate
    times = sorted(r["step_time_s"] for r in (steps[1:] or steps))
    median = times[len(times) // 2]
    rows = [["step time s (median)", f"{e.step_time_s:.4g}", f"{median:.4g}", f"{median / e.step_time_s:.2f}"],
            ["tokens/s", f"{e.tokens_per_s:,.0f}", f"{statistics.median(r['tokens_per_s'] for r in steps):,.0f}", ""]]
    peak = max(r.get("peak_memory_bytes", 0) for r in steps)
    predicted = max(e.memory_bytes_per_pp_rank)
    if plan.on_cpu:  # a CPU run reports its processes' resident memory, interpreter included
        rows.append(["peak memory (CPU: resident, not comparable)", gib(predicted), gib(peak), ""])
    else:
        rows.append(["peak memory, fullest GPU", gib(predicted), gib(peak), f"{peak / predicted:.2f}" if predicted else ""])
    for rank, held in enumerate(e.held_bytes_per_pp_rank):
        seen = [r for r in records if r.get("event") == "held" and r.get("pp_rank") == rank]
        if seen:
            want = held.param_bytes + held.grad_bytes + held.optimizer_bytes
            got = max(r["param_bytes"] + r["grad_bytes"] + r["optimizer_bytes"] for r in seen)
            rows.append([f"held bytes, pipeline rank {rank}", gib(want), gib(got), f"{got / want:.3f}" if want else ""])
    return rows


def print_run(plan: Plan, records: list[dict], out: TextIO | None = None) -> None:
    rows = run_rows(plan, records)
    steps = sum(1 for r in last_run(records) if "step" in r and "loss" in r)
    if rows:
        table(["measured vs predicted", "predicted", "measured", "ratio"], rows, out or sys.stdout,
              title=f"run ({steps} steps in metrics.jsonl)")
    else:
        print("run      no steps in metrics.jsonl yet", file=out or sys.stdout)
