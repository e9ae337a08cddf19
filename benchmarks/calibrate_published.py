"""Fit the A100's constants that no datasheet gives against published training runs.

Three numbers of `profiles/gpus/a100-80gb.toml` are fitted here, everything else in the cost model is
a datasheet figure, a measurement or an assumption stated where it is used:
- `matmul.max_efficiency`: the ceiling of the GEMM efficiency curve (its shape, `half_dim`, is kept);
- `hbm_efficiency`: the achieved share of HBM bandwidth for memory-bound ops;
- `comm_interference`: compute seconds lost per second of data-parallel collective overlapped with it.

Data: every row of `../shared/calibration/published.json` (Megatron-LM SC'21 Table 1, 10 rows;
torchtitan's Llama 2 FSDP2 rows, 3), each with its layout fixed as in `fidelity.py`. The stage bounds
are solved once at the shipped constants and kept (they barely move with these three numbers); each
candidate is then priced by the cost model's step time. Objective: the sum over the two tables of each
table's mean |predicted / published - 1|, so three torchtitan rows weigh as much as ten SC'21 rows.
Search: the full grid below (deterministic; 3 parameters for 13 rows, never one per row). The other
published runs, held back, check the result independently.

Measured 2026-12-01 (this commit; 450 grid points in 242 s on 2 cores): fitted max_efficiency 0.80,
hbm_efficiency 0.70 (its range's floor), comm_interference 0.375: SC'21 mean |error| 4.1% (max 9.5%),
torchtitan Llama 2 3.1% (max 8.1%); held out (torchtitan's Llama 3 rows, never fitted) +5.6% (8B
selective) and -1.4% (70B full). max_efficiency and hbm_efficiency are not separately identified by
these rows: the objective is nearly flat along a line through (0.78, 0.75, 0.5), the previous fit
(0.0796 there against 0.0721 here), so the split between GEMM and memory-bound time is the least
trustworthy part of the fit; a GPU measurement (`plan calibrate`) pins it. Against the constants
before these fits (0.82, 0.85, 1/6; profiles before the dropout change): 4.7% / 8.9% and 13.9% / 21.4%.
Both selective rows stay high because torchtitan's selective-op policy also recomputes every other
matmul, which the planner's selective mode does not.

Run: python benchmarks/calibrate_published.py [published.json]
Prints the error of every row at the shipped and at the fitted constants, and the lines to paste.
"""
from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import PUBLISHED, TMP, Case, cases, cost_model, llama_case, price  # noqa: E402

from planner.cluster.hardware import Device, device  # noqa: E402
from planner.types.strategy import Strategy  # noqa: E402

GRID = {
    # cuBLAS reaches 80-87% of the A100's bf16 peak on large square GEMMs in isolation (NVIDIA's GEMM
    # guide); a training step's GEMMs are not all large and square
    "matmul_max_efficiency": [0.70 + 0.02 * i for i in range(10)],  # 0.70 ... 0.88
    # copies reach ~85-90% of HBM2e's 2,039 GB/s (microbenchmarks); eager elementwise kernels less
    "hbm_efficiency": [0.70 + 0.05 * i for i in range(5)],  # 0.70 ... 0.90
    # from nothing to a GEMM running at half speed whenever a collective runs beside it (a 24-block
    # all-gather beside a full-wave GEMM on an H100 nearly doubled the GEMM: NVIDIA forum, 2025)
    "comm_interference": [i / 8 for i in range(9)],  # 0 ... 1
}
"""The search ranges are the physically possible values, so the fit cannot buy a row with an
implausible constant; a fitted value on a range's edge is reported as such."""


HELD_OUT = [  # torchtitan docs/performance.md, Llama 3 on 64 A100 80GB with FSDP2, local batch 1: not fitted
    dict(name="llama3 8B sel", layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, vocab=128256, seq=8192,
         tp=1, pp=1, gpus=64, batch=64, mbs=1, zero=3, recompute="selective", rope_theta=500000.0, wps=2973),
    dict(name="llama3 70B full", layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672, vocab=128256, seq=8192,
         tp=1, pp=1, gpus=64, batch=64, mbs=1, zero=3, recompute="full", rope_theta=500000.0, wps=331),
]
"""Two rows the fit never sees, priced at the shipped and the fitted constants as a check."""


def held_out() -> list[tuple[Case, Strategy]]:
    return [(case, price(case)[1]) for case in (llama_case("held out", row, 8, "a100-80gb", TMP) for row in HELD_OUT)]


def errors(placed: list[tuple[Case, Strategy]], dev: Device) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for case, s in placed:
        step = cost_model(case, dev).estimate(s, case.batch).step_time_s
        out.setdefault(case.table, []).append(case.work / step / case.published - 1)
    return out


def objective(errs: dict[str, list[float]]) -> float:
    return sum(statistics.mean(abs(e) for e in v) for v in errs.values())


def show(title: str, placed: list[tuple[Case, Strategy]], errs: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    labels = {t: [c.label for c, _ in placed if c.table == t] for t in errs}
    for table, v in errs.items():
        print("  " + ", ".join(f"{lab} {e:+.1%}" for lab, e in zip(labels[table], v)))
        print(f"  {table}: mean |error| {statistics.mean(abs(e) for e in v):.1%}, max {max(abs(e) for e in v):.1%}")


def main(argv: list[str]) -> None:
    data = json.loads(Path(argv[0] if argv else PUBLISHED).read_text())
    TMP.mkdir(exist_ok=True)
    base = device("a100-80gb")
    t0 = time.perf_counter()
    placed = [(case, price(case)[1]) for case in cases(data, TMP)]
    print(f"stage bounds solved at the shipped constants in {time.perf_counter() - t0:.0f} s")
    shipped = errors(placed, base)
    show(f"shipped: max_efficiency {base.matmul_max_efficiency}, hbm_efficiency {base.hbm_efficiency}, "
         f"comm_interference {base.comm_interference:.3g}  (objective {objective(shipped):.4f})", placed, shipped)
    t0 = time.perf_counter()
    best = None
    for values in itertools.product(*GRID.values()):
        dev = replace(base, **dict(zip(GRID, values)))
        score = objective(errors(placed, dev))
        if best is None or score < best[0] - 1e-12:
            best = (score, values)
    score, values = best
    fitted = dict(zip(GRID, values))
    check = held_out()
    show("held out, shipped constants", check, errors(check, base))
    show("held out, fitted constants", check, errors(check, replace(base, **fitted)))
    print(f"\ngrid of {len(list(itertools.product(*GRID.values())))} points in {time.perf_counter() - t0:.0f} s")
    show(f"fitted: {', '.join(f'{k} {v:.3g}' for k, v in fitted.items())}  (objective {score:.4f})",
         placed, errors(placed, replace(base, **fitted)))
    for k, v in fitted.items():
        if v in (GRID[k][0], GRID[k][-1]):
            print(f"note: {k} = {v:.3g} is on the edge of its range")
    print("\nprofiles/gpus/a100-80gb.toml:")
    print(f"  hbm_efficiency = {fitted['hbm_efficiency']:.3g}")
    print(f"  comm_interference = {fitted['comm_interference']:.4g}")
    print(f"  [matmul] max_efficiency = {fitted['matmul_max_efficiency']:.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
