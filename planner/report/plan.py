"""Print a `Plan`: the plan, its predicted time and memory, runner-ups, a compared layout, solver stats."""
from __future__ import annotations

import sys
import textwrap
from typing import TextIO

from planner.types.plan import Alternative, Plan
from planner.report.text import WIDTH, gib, human, table

__all__ = ["print_plan", "explain", "run_hint"]


def _stages(p: Plan) -> list[list[str]]:
    """One row per pipeline chunk: its modules as a range, recompute, and its rank's memory."""
    rows = []
    s, e = p.strategy, p.estimate
    for c, mods in enumerate(p.layout.stages):
        span = mods[0] if len(mods) == 1 else f"{mods[0]} .. {mods[-1]}"
        rank = c % s.pp
        mem = e.memory_bytes_per_pp_rank[rank]
        rows.append([str(c), str(rank), str(s.layers_per_chunk[c]), span[:40], s.recompute[c],
                     f"{gib(mem)} ({mem / e.memory_capacity_bytes:.0%})"])
    if len(rows) > 12:
        rows = rows[:6] + [["..", "", "", "", "", ""]] + rows[-5:]
    return rows


def _alt_row(name: str, a: Alternative) -> list[str]:
    e = a.estimate
    if e is None:
        return [name, a.strategy.label(), "-", "-", a.why_not]
    return [name, a.strategy.label(), f"{e.step_time_s:.3g}", f"{e.mfu:.1%}", a.why_not]


def print_plan(p: Plan, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    m, c, s, e = p.model, p.cluster, p.strategy, p.estimate
    print(f"model    {m.ref}: {human(m.params)} parameters, {m.blocks} blocks, "
          f"{human(m.flops_per_step)}FLOP per step", file=out)
    if m.tp_degrees:
        splits = f"splits: pipeline at block boundaries; tensor parallel {', '.join(map(str, m.tp_degrees))}"
        print(textwrap.fill(splits, WIDTH, initial_indent=" " * 9, subsequent_indent=" " * 11), file=out)
    print(f"cluster  {c.gpus} x {c.gpu} ({c.nodes} node(s) of {c.gpus_per_node}), "
          f"global batch {p.global_batch}", file=out)
    if c.device_profile.startswith("measured"):
        print(textwrap.fill(f"device profile {c.device_profile}", WIDTH, initial_indent=" " * 9,
                            subsequent_indent=" " * 11), file=out)
    print(f"plan     {s.label()}", file=out)
    print(f"         mesh {' x '.join(f'{a}{n}' for a, n in zip(p.layout.mesh_axes, p.layout.mesh_sizes))}"
          f" (outer to inner), dtype {p.layout.dtype}", file=out)
    links = e.links
    if links:
        print("         links: " + "; ".join(f"{a} over {'+'.join(k)}" for a, k in links.items()), file=out)
    print(f"predict  {e.step_time_s:.4g} s/step, {e.tokens_per_s:,.0f} tokens/s, MFU {e.mfu:.1%}, HFU {e.hfu:.1%}, "
          f"{human(e.model_tflops_per_gpu * 1e12)}FLOP/s per GPU", file=out)
    print(textwrap.fill(p.explanation, WIDTH, initial_indent="why      ", subsequent_indent=" " * 9), file=out)
    parts = [[k.replace("_", " "), f"{v:.4g}", f"{v / e.step_time_s:.1%}"] for k, v in e.breakdown.items()]
    table(["step time (busiest rank)", "seconds", "share"], parts, out)
    table(["chunk", "rank", "layers", "modules", "recompute", "memory"], _stages(p), out,
          title=f"stages (capacity {gib(e.memory_capacity_bytes)} per GPU, plans may use {gib(e.memory_limit_bytes)}: "
                f"headroom {gib(e.memory_limit_bytes - max(e.memory_bytes_per_pp_rank))})")
    rows = [_alt_row(f"#{i + 2}", r) for i, r in enumerate(p.runner_ups)]
    if p.comparison is not None:
        rows.append(_alt_row("compared", p.comparison))
    if rows:
        table(["", "layout", "s/step", "MFU", "why it loses"], rows, out, title="runner-ups")
    for i, w in enumerate(p.what_if):
        line = f"{w.case}: {w.step_time_s:.4g} s/step ({w.step_time_s / e.step_time_s - 1:+.1%})"
        if w.runner_up_step_time_s is not None:
            line += (f", runner-up {w.runner_up} {w.runner_up_step_time_s:.4g}: " +
                     ("the runner-up would win" if w.winner_changes else "the plan still wins"))
        print(textwrap.fill(line, WIDTH, initial_indent="what if  " if i == 0 else " " * 9,
                            subsequent_indent=" " * 11), file=out)
    sv = p.solver
    if sv is not None:
        print(f"solver   {sv.status} (gap {sv.gap:.2%}), {sv.candidates} candidates, {sv.pruned} pruned, "
              f"{sv.solved} solved, {sv.wall_s:.2f} s", file=out)
        if sv.open:
            named = ", ".join(f"{layout} >= {b:.5g} s/step" for layout, b in sv.open.items())
            more = f" (the {len(sv.open)} least shown)" if sv.open_total > len(sv.open) else ""
            line = f"{sv.open_total} layout{'s' * (sv.open_total != 1)} not proved slower than the plan{more}: {named}"
            print(textwrap.fill(line, WIDTH, initial_indent="open     ", subsequent_indent=" " * 9), file=out)


def explain(p: Plan) -> str:
    """The full report `plan` prints, as a string."""
    import io
    buf = io.StringIO()
    print_plan(p, buf)
    return buf.getvalue()


def run_hint(p: Plan, directory: str) -> str:
    """How to run the emitted program: `plan run DIR` on one node (a CPU plan runs with gloo), else
    launch.sh on every node."""
    nodes, _ = p.node_shape()
    if nodes == 1:
        return f"plan run {directory}"
    return (f"on each of the {nodes} nodes, NNODES={nodes} NODE_RANK=i MASTER_ADDR=<node 0> bash "
            f"{directory}/launch.sh (see {directory}/README.md)")
