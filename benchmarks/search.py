"""Search speed and exactness on real models (cached profiles): for each case the whole search's wall
time, status, gap and candidates visited/pruned/solved, plus single stage-partition solves (the
exact CP-SAT + critical-path loop) with their rounds. Run: python benchmarks/search.py [time_limit]."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import planner
from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.search.master import solve
from planner.search.pricing import problem
from planner.search.search import search
from planner.search.space import Constraints, parse_layout

ROOT = Path(__file__).resolve().parent.parent


def model(ref: str, gpus: str, gpu: str = "a100-80gb") -> CostModel:
    prof = planner.profile(str(ROOT / ref), micro_batch=1)  # cached after the first run
    return CostModel(prof, parse_gpus(gpus, gpu)[0])


def bench(ref: str, gpus: str, batch: int, limit: float, gpu: str = "a100-80gb") -> None:
    cm = model(ref, gpus, gpu)
    t = time.perf_counter()
    res = search(cm, Constraints(global_batch=batch, tp_across_nodes=True, time_limit=limit))
    wall = time.perf_counter() - t
    s = res.stats
    best = res.best
    print(f"{ref} on {gpus}: search {wall:.1f} s, status {s.status} gap {s.gap:.1%}, {s.candidates} candidates, "
          f"{s.pruned} pruned, {s.solved} solved; best {best.strategy.label()} {best.estimate.step_time_s:.4g} s/step,"
          f" MFU {best.estimate.mfu:.1%}")


def partition(ref: str, gpus: str, batch: int, layout: str, limit: float) -> None:
    cm = model(ref, gpus)
    s = parse_layout(layout, cm.profile, cm.world, batch)
    t = time.perf_counter()
    sol = solve(problem(cm, s), time_limit=limit)
    print(f"  partition {ref} {layout}: {time.perf_counter() - t:.2f} s, {sol.status}, rounds {sol.stats['rounds']}, "
          f"paths {sol.stats['paths']}")


if __name__ == "__main__":
    limit = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    for layout in ("tp8-pp4-dp1", "tp2-pp16-dp1", "tp1-pp2-dp16-mbs8-interleaved-v3-zero2"):
        partition("examples/gpt.py:gpt3_13b", "8x4", 512, layout, limit)
    partition("examples/gpt.py:gpt_1t", "8x384", 3072, "tp8-pp64-dp6", limit)
    bench("examples/gpt.py:gpt3_13b", "8x4", 512, limit)
    bench("examples/gpt.py:gpt3_175b", "8x16", 512, limit)
    bench("examples/llama.py:llama3_70b", "8x16", 512, limit)
    bench("examples/gpt.py:gpt_1t", "8x384", 3072, limit)
    bench("examples/llama.py:llama3_405b", "8x2048", 2048, limit, "h100-sxm")
