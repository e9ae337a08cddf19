"""Benchmark: `plan profile examples/gpt.py:gpt3_175b` from a cold cache, interpreter start included.

Target (issue 2): under 10 s wall and under 2 GB resident on a 2-core machine. Prints both figures,
then the time of a second, cached run.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    cmd = [sys.executable, str(ROOT / "cli.py"), "profile", "examples/gpt.py:gpt3_175b", "--micro-batch", "1"]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PLANNER_CACHE_DIR": cache}
        cold = timed(cmd, env)
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        warm = timed(cmd, env)
    print(f"gpt3_175b profile, cold cache: {cold:.2f} s wall (target < 10 s), "
          f"peak RSS {rss_kib / 2**20:.2f} GiB (target < 2 GiB)")
    print(f"gpt3_175b profile, cached:     {warm:.2f} s wall")


if __name__ == "__main__":
    main()
