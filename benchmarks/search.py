"""Search speed and exactness on real models (cached profiles): for each case the whole search's wall
time, status, gap and candidates visited/pruned/solved, plus single stage-partition solves (the
exact CP-SAT + critical-path loop) with their rounds. Run: python benchmarks/search.py [time_limit].

`python benchmarks/search.py [time_limit] --determinism`: each case planned twice with the `plan` command,
the second time beside a busy process (one core spinning), and the two plan.json compared apart from
the wall-clock field (`solver.wall_s`): the issue asks for byte-identical plans under load."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
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
    if s.open:
        layout, bound = next(iter(s.open.items()))
        print(f"  {s.open_total} layout{'s' * (s.open_total != 1)} open below it; the gap is held by {layout} >= {bound:.5g} s/step")


def partition(ref: str, gpus: str, batch: int, layout: str, limit: float) -> None:
    cm = model(ref, gpus)
    s = parse_layout(layout, cm.profile, cm.world, batch)
    t = time.perf_counter()
    sol = solve(problem(cm, s), time_limit=limit)
    print(f"  partition {ref} {layout}: {time.perf_counter() - t:.2f} s, {sol.status}, rounds {sol.stats['rounds']}, "
          f"paths {sol.stats['paths']}")


def _plan_json(ref: str, gpus: str, batch: int, limit: float, gpu: str, out: Path) -> tuple[dict, float]:
    """The `plan` command's plan.json for the case, and its wall time."""
    t = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "plan", str(ROOT / ref), "--gpus", gpus, "--gpu", gpu,
                    "--global-batch", str(batch), "--tp-across-nodes", "--time-limit", str(limit), "--quiet",
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text()), time.perf_counter() - t


def _differences(a, b, path: str = "") -> list[str]:
    """Keys (dotted) where two plan.json trees differ, wall-clock fields left out."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys if f"{path}.{k}" != ".solver.wall_s" for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def determinism(ref: str, gpus: str, batch: int, limit: float, gpu: str = "a100-80gb") -> None:
    """Plan twice, the second time while another process keeps a core busy; print whether the plan.json
    files agree apart from the wall-clock field."""
    with tempfile.TemporaryDirectory() as tmp:
        quiet, t1 = _plan_json(ref, gpus, batch, limit, gpu, Path(tmp) / "a.json")
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            loaded, t2 = _plan_json(ref, gpus, batch, limit, gpu, Path(tmp) / "b.json")
        finally:
            hog.kill()
            hog.wait()
    diff = _differences(quiet, loaded)
    print(f"{ref} on {gpus}: plan {t1:.1f} s alone, {t2:.1f} s beside a busy process; status {quiet['solver']['status']}; "
          + ("plan.json identical apart from solver.wall_s" if not diff else f"DIFFERENT at {', '.join(diff[:8])}"))


CASES = (("examples/gpt.py:gpt3_13b", "8x4", 512, "a100-80gb"), ("examples/gpt.py:gpt3_175b", "8x16", 512, "a100-80gb"),
         ("examples/llama.py:llama3_70b", "8x16", 512, "a100-80gb"), ("examples/gpt.py:gpt_1t", "8x384", 3072, "a100-80gb"),
         ("examples/llama.py:llama3_405b", "8x2048", 2048, "h100-sxm"))


if __name__ == "__main__":
    limit = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1][0].isdigit() else 60.0
    if "--determinism" in sys.argv:
        for ref, gpus, batch, gpu in CASES:
            determinism(ref, gpus, batch, limit, gpu)
        sys.exit(0)
    for layout in ("tp8-pp4-dp1", "tp2-pp16-dp1", "tp1-pp2-dp16-mbs8-interleaved-v3-zero2"):
        partition("examples/gpt.py:gpt3_13b", "8x4", 512, layout, limit)
    partition("examples/gpt.py:gpt_1t", "8x384", 3072, "tp8-pp64-dp6", limit)
    for ref, gpus, batch, gpu in CASES:
        bench(ref, gpus, batch, limit, gpu)
