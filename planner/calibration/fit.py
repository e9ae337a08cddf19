"""Turn a calibration run's raw measurements into a device profile (TOML text the planner reads back).

The links are fitted through the planner's own collective model: the node's measured all-reduce times
are matched by the per-hop latency and bandwidth that make `collective_model` on this node reproduce
them (least squares on relative error), so what the cost model later predicts is what was measured.
"""
from __future__ import annotations

import math
import platform
from dataclasses import replace
from datetime import date

from planner.cluster.collectives import collective_model
from planner.cluster.graph import build_cluster
from planner.cluster.hardware import LinkSpec, NodeSpec, device, node_preset

__all__ = ["profile_toml", "fit_half_dim", "fit_link"]

_DTYPE_KEY = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def fit_half_dim(rows: list[list], peak: float) -> float:
    """The `half_dim` h of the efficiency curve Π x/(x+h) closest (in log) to the measured GEMMs."""
    def err(h: float) -> float:
        return sum((math.log(r[4] / peak) - sum(math.log(x / (x + h)) for x in r[:3])) ** 2 for r in rows)
    return min((2 ** (e / 4) for e in range(0, 45)), key=err)


def _solve(a: list[float], b: list[float], t: list[float]) -> tuple[float, float]:
    """Least squares of Σ ((x·a_i + y·b_i) / t_i - 1)², with x, y >= 0."""
    saa = sum((ai / ti) ** 2 for ai, ti in zip(a, t))
    sbb = sum((bi / ti) ** 2 for bi, ti in zip(b, t))
    sab = sum(ai * bi / ti ** 2 for ai, bi, ti in zip(a, b, t))
    sa = sum(ai / ti for ai, ti in zip(a, t))
    sb = sum(bi / ti for bi, ti in zip(b, t))
    det = saa * sbb - sab ** 2
    if det > 0:
        x, y = (sa * sbb - sb * sab) / det, (sb * saa - sa * sab) / det
        if x >= 0 and y >= 0:
            return x, y
    return max(0.0, sa / saa), max(0.0, sb / sbb)  # one term alone when the joint fit goes negative


def fit_link(base: NodeSpec, ranks: int, measured: list[list]) -> tuple[float, float]:
    """(per-hop latency s, bandwidth B/s at efficiency 1) that make the planner's ring all-reduce over
    `ranks` GPUs of one `base` node match `measured` [[bytes, seconds], ...]."""
    def model(latency: float, bandwidth: float) -> tuple[float, float]:
        link = LinkSpec(kind=base.intra.kind, bandwidth=bandwidth, latency=latency, efficiency=1.0)
        node = replace(base, intra=link, gpus_per_node=ranks)
        return collective_model(build_cluster("calibration", [node]), "all_reduce", [list(range(ranks))])
    _, fixed = model(1.0, 1e30)  # seconds per unit of latency
    per_byte, _ = model(0.0, 1.0)  # seconds per byte at unit bandwidth
    latency, inverse_bw = _solve([fixed] * len(measured), [per_byte * s for s, _ in measured], [t for _, t in measured])
    return latency, 1.0 / inverse_bw if inverse_bw > 0 else 1e12


def profile_toml(raw: dict, *, base_node: str, command: str) -> str:
    """The device profile file for `raw` (the worker's JSON), with its source in the header."""
    rows = raw["gemm"]
    dtype = rows[0][3]
    peak = max(r[4] for r in rows)
    base = node_preset(base_node)
    ranks = raw["ranks"]
    latency, bandwidth = fit_link(base, ranks, raw["collectives"]["all_reduce"]) if ranks > 1 else \
        (base.intra.latency, base.intra.bandwidth * base.intra.efficiency)
    today = date.today().isoformat()
    source = (f"measured {today} by `plan calibrate` on {platform.node() or 'this host'} ({platform.processor() or platform.machine()}), "
              f"torch {raw['torch']}, {ranks} rank(s) x {raw['threads_per_rank']} thread(s), {raw['backend']}")
    peaks = {_DTYPE_KEY[dtype]: peak}
    note = "measured"
    if dtype == "float32":  # a CPU: half precision is emulated; not measured
        peaks |= {"bf16": peak / 2, "fp16": peak / 2}
        note = "fp32 measured; bf16/fp16 assumed half of it (emulated on CPUs)"
    lines = [
        f"# Device profile written by `{command}`.",
        f"# {source}.",
        "# Method: every rank measures at once (cores, memory and links shared as in training): median time",
        "# of each GEMM shape and causal fused attention, of a copy (64 MiB on a CPU, 1 GiB on a GPU; read +",
        "# write), of a chain of tiny autograd ops (host seconds per operator), and of all-reduces over message",
        "# sizes; the link is fitted through the planner's own collective model. Raw numbers: the [[gemm]],",
        "# [[attention]] (both read by the planner) and [[collective]] tables below.",
        f'name = "{raw["device"]}"',
        f'description = "{raw["device"]}, measured {today}"',
        f'source = "{source}"',
        f"memory_bytes = {int(raw['memory_bytes'])}",
        f"hbm_bandwidth = {raw['memory_bandwidth']:.6g}        # measured copy bandwidth per rank",
        "hbm_efficiency = 1.0",
        _interference_line(dtype, base),
        *_host_lines(raw, dtype),
        'default_node = "calibrated"',
        "",
        f"[peak_flops]                      # the fastest measured GEMM; {note}",
        *[f"{k} = {v:.6g}" for k, v in peaks.items()],
        "",
        "[matmul]                          # fitted to the rows below (which override it by nearest shape)",
        "max_efficiency = 1.0",
        f"half_dim = {fit_half_dim(rows, peak):.4g}",
        "",
        *_node_lines(raw, base, base_node, latency, bandwidth),
        "",
        *_tables(raw),
    ]
    return "\n".join(lines) + "\n"


def _host_lines(raw: dict, dtype: str) -> list[str]:
    """Host seconds per operator add to a CPU's compute (dispatch and kernel share its cores). A GPU's
    launches run ahead of its kernels and hide behind them, so they are written 0 there and the
    measurement is kept as a comment (on an H200, 2026-12-04: 13.6 us an operator, which would have
    added 0.58 s to a GPT 1.3B step measured at 0.67 s)."""
    op, tp = raw["op_overhead"], raw.get("tp_op_overhead", 0.0)
    if dtype == "float32":
        return [f"op_overhead = {op:.6g}        # measured host seconds per operator",
                f"tp_op_overhead = {tp:.6g}        # measured host seconds a TP projection adds"]
    return [f"op_overhead = 0        # measured {op:.3g} s per operator; hidden behind the kernels on a GPU",
            f"tp_op_overhead = 0        # measured {tp:.3g} s per TP projection; hidden likewise"]


def _interference_line(dtype: str, base: NodeSpec) -> str:
    """Not measured here (it needs a training step beside a collective): a CPU's gloo takes no compute
    units; a GPU takes the value of its base node's GPU file, fitted there to published runs."""
    if dtype == "float32":
        return "comm_interference = 0.0        # gloo on CPUs takes no compute units"
    return (f"comm_interference = {device(base.gpu).comm_interference:.6g}        # not measured: as "
            f"{base.gpu} (benchmarks/calibrate_published.py)")


def _node_lines(raw: dict, base: NodeSpec, base_node: str, latency: float, bandwidth: float) -> list[str]:
    """This host as a node of `ranks` devices: the fitted link inside, the preset's NIC and fabric."""
    return [
        "[node]                            # this host as a node of `ranks` devices",
        f'description = "this host, {raw["ranks"]} rank(s)"',
        f'gpu = "{raw["device"]}"',
        f"gpus_per_node = {raw['ranks']}",
        "[node.intra]",
        f'kind = "{base.intra.kind}"',
        f"bandwidth = {bandwidth:.6g}      # fitted to the measured all-reduces (efficiency folded in)",
        f"latency = {latency:.6g}      # fitted per ring hop",
        "efficiency = 1.0",
        f"[node.nic]                        # not measured (one host): from the {base_node} preset",
        f'kind = "{base.nic.kind}"',
        f"count = {base.nic_count}",
        f"bandwidth = {base.nic.bandwidth:.6g}",
        f"latency = {base.nic.latency:.6g}",
        f"efficiency = {base.nic.efficiency:.6g}",
        "[node.pcie]",
        f"bandwidth = {base.pcie_bandwidth:.6g}",
        "[node.fabric]",
        f"nodes_per_leaf = {base.nodes_per_leaf}",
        f"oversubscription = {base.oversubscription:.6g}",
    ]


def _tables(raw: dict) -> list[str]:
    """The raw measurements: GEMMs and fused attention (which the planner reads), collectives (fitted
    above; kept for reference)."""
    return [
        *[f'[[gemm]]\nm = {m}\nn = {n}\nk = {k}\ndtype = "{dt}"\nflops = {f:.6g}' for m, n, k, dt, f in raw["gemm"]],
        *[f'[[attention]]\nq_len = {q}\nkv_len = {kv}\nhead_dim = {hd}\ndtype = "{dt}"\nflops = {f:.6g}'
          for q, kv, hd, dt, f in raw["attention"]],
        *[f'[[collective]]\nop = "{op}"\nbytes = {b}\nseconds = {t:.6g}'
          for op, pts in raw.get("collectives", {}).items() for b, t in pts],
    ]
