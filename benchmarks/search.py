"""Search speed: GPT-3 175B on 8x128 A100 and the 1T GPT on 8x384 A100 (cached profiles), plus the
whole `plan` command for the 1T model. Prints wall times and candidates pruned vs solved."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import planner
from planner.cluster.graph import parse_gpus
from planner.cost.model import CostModel
from planner.search.search import search
from planner.search.space import Constraints

ROOT = Path(__file__).resolve().parent.parent


def bench(ref: str, gpus: str, batch: int) -> None:
    prof = planner.profile(str(ROOT / ref), micro_batch=1)  # cached after the first run
    cm = CostModel(prof, parse_gpus(gpus, "a100-80gb")[0])
    t = time.perf_counter()
    res = search(cm, Constraints(global_batch=batch, tp_across_nodes=True, time_limit=300))
    wall = time.perf_counter() - t
    s = res.stats
    print(f"{ref} on {gpus}: search {wall:.1f} s, {s.candidates} candidates, {s.pruned} pruned, "
          f"{s.solved} solved, status {s.status}; best {res.best.strategy.label()} "
          f"{res.best.estimate.step_time_s:.3g} s/step, MFU {res.best.estimate.mfu:.1%}")


if __name__ == "__main__":
    bench("examples/gpt.py:gpt3_175b", "8x128", 1536)
    bench("examples/gpt.py:gpt_1t", "8x384", 3072)
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), str(ROOT / "examples/gpt.py:gpt_1t"), "--gpus", "8x384",
                    "--global-batch", "3072", "--tp-across-nodes", "--quiet", "--time-limit", "300"], check=True)
    print(f"whole plan command for gpt_1t on 8x384: {time.perf_counter() - t:.1f} s")
