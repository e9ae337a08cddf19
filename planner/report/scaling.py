"""What-if over cluster sizes: one plan per cluster, a table and a plot of how training scales."""
from __future__ import annotations

from pathlib import Path
from typing import TextIO

from planner.report.figure import figure, save
from planner.types.plan import Plan
from planner.report.text import table

__all__ = ["scaling_rows", "print_scaling", "draw_scaling"]


def scaling_rows(plans: list[Plan]) -> list[dict]:
    """Per plan: cluster, GPUs, layout, step time, tokens/s, MFU, and GPU-hours per billion tokens
    (GPUs x seconds per token x 1e9 / 3600: the cost of training on that cluster)."""
    rows = []
    for p in plans:
        e, gpus = p.estimate, p.cluster.gpus
        rows.append({"cluster": p.cluster.name, "gpus": gpus, "plan": p.strategy.label(),
                     "step_time_s": e.step_time_s, "tokens_per_s": e.tokens_per_s, "mfu": e.mfu,
                     "gpu_hours_per_1b_tokens": gpus * 1e9 / e.tokens_per_s / 3600 if e.tokens_per_s else float("inf")})
    return rows


def print_scaling(plans: list[Plan], out: TextIO | None = None) -> None:
    rows = [[r["cluster"][:18], str(r["gpus"]), r["plan"][:44], f"{r['step_time_s']:.3g}", f"{r['tokens_per_s']:,.0f}",
             f"{r['mfu']:.1%}", f"{r['gpu_hours_per_1b_tokens']:,.1f}"] for r in scaling_rows(plans)]
    table(["cluster", "GPUs", "plan", "s/step", "tokens/s", "MFU", "GPU-h/1B tok"], rows, out,
          title=f"scaling (global batch {plans[0].global_batch})")


def draw_scaling(plans: list[Plan], path: str | Path) -> list[dict]:
    """Tokens/s and MFU against GPU count (PNG, or SVG by suffix)."""
    rows = scaling_rows(plans)
    gpus = [r["gpus"] for r in rows]
    plt, (fig, ax) = figure(6, 4)
    ax.plot(gpus, [r["tokens_per_s"] for r in rows], "o-", color="#4c72b0", label="tokens/s")
    ax.plot(gpus, [rows[0]["tokens_per_s"] * g / gpus[0] for g in gpus], ":", color="#4c72b0", label="linear")
    ax.set_xlabel("GPUs")
    ax.set_ylabel("tokens/s")
    mfu = ax.twinx()
    mfu.plot(gpus, [100 * r["mfu"] for r in rows], "s--", color="#dd8452", label="MFU %")
    mfu.set_ylabel("MFU %")
    mfu.set_ylim(0, 100)
    fig.legend(loc="upper left", fontsize=7)
    save(plt, fig, path)
    return rows
