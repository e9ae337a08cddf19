"""Pictures of a plan: the pipeline timeline and memory per stage (PNG, or SVG by file name).

Each picture comes from plain data (`timeline_data`, `memory_data`) that tests check without pixels;
the drawing only renders it. Everything is read from the `Plan` (its per-chunk times and memory), so a
saved plan.json draws without the model or the cluster.
"""
from __future__ import annotations

from pathlib import Path

from planner.errors import PlannerError
from planner.report.figure import figure, save
from planner.types.plan import Plan
from planner.cost.schedule import program, simulate

__all__ = ["timeline_data", "memory_data", "draw_timeline", "draw_memory"]

KINDS = ("weights", "grads", "optimizer", "activations", "buffers")


def timeline_data(plan: Plan) -> dict:
    """Per pipeline rank (one row per stage), its forward and backward blocks with start and end
    seconds; the point-to-point sends; the end-of-step gradient sync and optimizer step."""
    times = plan.estimate.chunk_times
    if not times:
        raise PlannerError("this plan.json has no per-chunk times (an older planner wrote it); plan again")
    s = plan.strategy
    fwd, bwd = [t.fwd for t in times], [t.bwd for t in times]
    sends = [t.send for t in times]
    events: list = []
    timing = simulate(program(s.schedule, s.pp, s.vpp, s.num_micro_batches), fwd, bwd, sends,
                      [0.0] + sends[:-1], events)
    rows: list[list[dict]] = [[] for _ in range(s.pp)]
    for r, c, kind, m, a, b in sorted(events, key=lambda e: (e[0], e[4])):
        rows[r].append({"chunk": c, "kind": kind, "micro_batch": m, "start": a, "end": b})
    comm = [{"from": c % s.pp, "to": (c + 1) % s.pp, "chunk": c, "micro_batch": m, "start": b, "end": b + sends[c]}
            for _, c, kind, m, _, b in events if kind == "F" and c + 1 < len(times) and sends[c] > 0]
    tail = plan.estimate.breakdown.get("dp_comm", 0.0) + plan.estimate.breakdown.get("optimizer", 0.0)
    return {"rows": rows, "sends": comm, "makespan": timing.makespan, "tail": tail,
            "busy": list(timing.busy), "label": s.label()}


def memory_data(plan: Plan) -> dict:
    """Per pipeline rank, bytes by kind (weights, grads, optimizer, activations, buffers), and the
    device capacity."""
    per_rank = plan.estimate.memory_bytes_per_rank
    return {"stages": [{k: int(m.get(k, 0)) for k in KINDS} for m in per_rank],
            "capacity": plan.estimate.memory_capacity_bytes, "label": plan.strategy.label()}


def steady_cut(data: dict) -> tuple[float, float] | None:
    """With many micro-batches the middle of the step is the same 1F1B pattern over and over: the
    picture keeps the warm-up until micro-batch `pp + 2` leaves stage 0 and the cool-down from the
    backward of micro-batch `n - pp - 2` there, and cuts the steady state between (None: no cut)."""
    row0 = data["rows"][0]
    n = 1 + max(b["micro_batch"] for b in row0)
    keep = len(data["rows"]) + 2
    if n < 3 * keep:
        return None
    t1 = max(b["end"] for b in row0 if b["kind"] == "F" and b["micro_batch"] == keep - 1)
    t2 = min(b["start"] for b in row0 if b["kind"] == "B" and b["micro_batch"] == n - keep)
    return (t1, t2) if t2 > t1 else None


def _draw_rows(ax, data: dict, label_blocks: bool) -> None:
    pp = len(data["rows"])
    for r, row in enumerate(data["rows"]):
        y = pp - 1 - r
        for blk in row:
            color = "#4c72b0" if blk["kind"] == "F" else "#dd8452"
            ax.barh(y, blk["end"] - blk["start"], left=blk["start"], height=0.8, color=color, edgecolor="white",
                    linewidth=0.3)
            if label_blocks:
                ax.text((blk["start"] + blk["end"]) / 2, y, str(blk["micro_batch"]), ha="center", va="center",
                        fontsize=6, color="white", clip_on=True)
        if data["tail"] > 0:
            ax.barh(y, data["tail"], left=data["makespan"], height=0.8, color="#8c8c8c")
    for snd in data["sends"]:
        ax.plot([snd["start"], snd["end"]], [pp - 1 - snd["from"] - 0.45] * 2, color="black", linewidth=1.5)
    ax.set_xlabel("seconds")


def draw_timeline(plan: Plan, path: str | Path) -> dict:
    """Draw the schedule: a row per stage, forward (blue) and backward (orange) blocks labelled with
    their micro-batch, sends as black ticks, the gradient sync and optimizer in grey; gaps are bubble.
    Hundreds of micro-batches are drawn as warm-up and cool-down with the steady state cut out."""
    data = timeline_data(plan)
    pp = len(data["rows"])
    cut = steady_cut(data)
    data["cut"] = cut
    plt, (fig, ax) = figure(12, 1.0 + 0.45 * pp)
    axes = [ax]
    if cut:
        fig.clf()
        axes = list(fig.subplots(1, 2, sharey=True))
        axes[0].set_xlim(0, cut[0])
        axes[1].set_xlim(cut[1], data["makespan"] + data["tail"])
    visible = sum(1 for row in data["rows"] for b in row
                  if not cut or b["end"] <= cut[0] or b["start"] >= cut[1])
    for a in axes:
        _draw_rows(a, data, visible <= 400)
    axes[0].set_yticks(range(pp), [f"stage {pp - 1 - y}" for y in range(pp)])
    note = f"; {cut[1] - cut[0]:.3g} s of steady state cut" if cut else ""
    fig.suptitle(f"{data['label']}: forward (blue), backward (orange), sends (black), DP sync + optimizer "
                 f"(grey){note}", fontsize=9)
    save(plt, fig, path)
    return data


def draw_memory(plan: Plan, path: str | Path) -> dict:
    """Draw memory per stage stacked by kind against the device capacity."""
    data = memory_data(plan)
    plt, (fig, ax) = figure(max(5, 0.5 * len(data["stages"]) + 3), 4)
    bottom = [0.0] * len(data["stages"])
    for kind in KINDS:
        values = [st[kind] / 2**30 for st in data["stages"]]
        ax.bar(range(len(values)), values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axhline(data["capacity"] / 2**30, color="red", linestyle="--", label="capacity")
    ax.set_xticks(range(len(bottom)), [str(i) for i in range(len(bottom))])
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel("GiB per GPU")
    ax.set_title(data["label"], fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    save(plt, fig, path)
    return data
