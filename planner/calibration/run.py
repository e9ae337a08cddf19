"""Run the calibration worker on this machine with torchrun and write the device profile file."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from planner.calibration.fit import profile_toml
from planner.errors import PlannerError, refuse_overwrite

__all__ = ["calibrate"]


def calibrate(out: str | Path, *, ranks: int = 2, quick: bool = False, cpu: bool = False,
              overwrite: bool = False) -> Path:
    """Measure this machine with `ranks` processes at once (gloo on CPU, NCCL on GPUs) and write the
    device profile to `out`; returns its path. `quick` measures fewer shapes and sizes (under a minute)."""
    out = refuse_overwrite(out, overwrite)
    if ranks < 1:
        raise PlannerError(f"ranks={ranks}: give at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
               "--nproc-per-node", str(ranks), "-m", "planner.calibration.worker", "--out", str(raw_path),
               *(["--quick"] if quick else []), *(["--cpu"] if cpu else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not raw_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PlannerError(f"the calibration run failed ({tail[0][:200]}); check that torch runs here")
        raw = json.loads(raw_path.read_text())
    base = "cpu-host" if raw["device"] == "cpu" else "dgx-h100"
    command = f"plan calibrate --ranks {ranks}{' --quick' if quick else ''}"
    out.write_text(profile_toml(raw, base_node=base, command=command))
    return out
