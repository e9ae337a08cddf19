"""Predicted vs measured step time on this machine's CPU: calibrate it (`plan calibrate --ranks 2
--quick`), plan the tiny GPT and tiny Llama with the layout fixed (1 rank; dp2, tp2, pp2 on 2 ranks), run
each emitted program for a few steps, and print the measured median step time (after warm-up) beside
the prediction made with the measured profile and with the datasheet `cpu` profile.

Run: python benchmarks/fidelity_cpu.py [--steps 8]   (never more ranks than this machine's cores: 2)

Measured 2026-12-01 on the 2-core build machine (ratio = measured / predicted with the measured profile;
the datasheet `cpu` profile, written for 8 ranks sharing 2 cores, predicts 5-16x too slow for 2 ranks).
GPT / Llama: 1 rank 0.86 / 0.91, dp2 1.75 / 1.06, tp2 1.27 / 0.82, pp2 1.93 / 1.08 (after TP's backward
went to one all-reduce per colwise group). An earlier run of the same code before that change: 1 rank
0.80 / 0.62, dp2 1.26 / 1.02, tp2 2.58 / 2.15, pp2 1.42 / 0.92. Run to run, the measured step times of
the same layout move by up to 40% on this loaded 2-core machine. The 25% target is not met yet: the
pipeline and DP layouts of the GPT lose time the model does not price (gloo ranks out of step).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import planner

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"gpt tiny": ROOT / "examples" / "gpt.py", "llama tiny": ROOT / "examples" / "llama.py"}
FIXED = dict(micro_batch=4, zero=0, recompute="none", sequence_parallel=False)
LAYOUTS = {"1 rank": ("1", dict(tp=1, pp=1, dp=1)),
           "dp2": ("2", dict(tp=1, pp=1, dp=2)),
           "tp2": ("2", dict(tp=2, pp=1, dp=1)),
           "pp2": ("2", dict(tp=1, pp=2, dp=1, schedule="1f1b"))}


def measure(plan: planner.Plan, directory: Path, steps: int) -> float:
    planner.emit(plan, directory)
    metrics = directory / "metrics.jsonl"
    code = planner.run(directory, cpu=True, args=("--steps", str(steps), "--warmup", "0",
                                                  "--checkpoint-dir", str(directory / "ck"), "--metrics", str(metrics)))
    if code != 0:
        raise SystemExit(f"the program in {directory} failed ({code})")
    times = [r["step_time_s"] for r in map(json.loads, metrics.read_text().splitlines()) if "step" in r and "loss" in r]
    return statistics.median(times[2:])  # steps 1-2 warm up (shape inference, allocator)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        profile = planner.calibrate(tmp / "measured.toml", ranks=2, quick=True, cpu=True)
        print(f"calibrated: {profile}")
        rows = []
        for model, path in MODELS.items():
            for name, (gpus, knobs) in LAYOUTS.items():
                kw = dict(global_batch=8, **FIXED, **knobs)
                sheet = planner.plan(f"{path}:tiny", gpus, "cpu", **kw)
                measured_plan = planner.plan(f"{path}:tiny", gpus, str(profile), **kw)
                assert sheet.strategy.label() == measured_plan.strategy.label(), "the layout must be the same"
                t = measure(measured_plan, tmp / f"{model}-{name}".replace(" ", "-"), args.steps)
                rows.append((model, name, measured_plan.strategy.label(), t, measured_plan.estimate.step_time_s,
                             sheet.estimate.step_time_s))
    print(f"{'model':<11} {'layout':<7} {'measured s':>11} {'measured-profile s':>19} {'ratio':>6} "
          f"{'datasheet s':>12} {'ratio':>6}")
    worst = 0.0
    for model, name, label, t, pm, ps in rows:
        print(f"{model:<11} {name:<7} {t:>11.4f} {pm:>19.4f} {t / pm:>6.2f} {ps:>12.4f} {t / ps:>6.2f}")
        worst = max(worst, abs(t / pm - 1))
    print(f"worst |measured / predicted - 1| with the measured profile: {worst:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
