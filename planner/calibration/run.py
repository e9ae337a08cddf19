"""Run the calibration worker on this machine with torchrun and write the device profile file."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from planner.calibration.fit import profile_toml
from planner.errors import PlannerError, refuse_overwrite

__all__ = ["calibrate", "failure_cause"]

_EXCEPTION = re.compile(r"^(?:\[rank(\d+)\]:\s*)?((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*"
                        r"(?:Error|Exception|Exit|Interrupt)\b.*)$")
_RANK = re.compile(r"^rank\s*:\s*(\d+)")
_SIGNAL = re.compile(r"Signal \d+ \(\w+\) received by PID \d+")
_TORCHRUN = ("ChildFailedError", "torch.distributed.elastic")


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
            why = failure_cause(proc.stderr + "\n" + proc.stdout)
            raise PlannerError(f"the calibration run failed ({why[:200]}); check that torch runs here")
        raw = json.loads(raw_path.read_text())
    base = "cpu-host" if raw["device"] == "cpu" else "dgx-h100"
    command = f"plan calibrate --ranks {ranks}{' --quick' if quick else ''}"
    out.write_text(profile_toml(raw, base_node=base, command=command))
    return out


def failure_cause(output: str) -> str:
    """The line of a failed torchrun's output that says why. torchrun ends with its own
    `ChildFailedError` and a footer that names the rank that failed first ("Root Cause") but not why;
    the ranks' lines come before, prefixed `[rankN]:`, and a rank whose peer failed raises errors of
    its own (a closed connection). So: the last exception the first-failed rank raised, else the
    signal that killed it, else the last exception any rank raised, else the last line that is not
    decoration."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    root = max((i for i, ln in enumerate(lines) if ln.startswith("Root Cause")), default=len(lines))
    first = next((m.group(1) for ln in lines[root:] if (m := _RANK.match(ln))), None)
    raised = [(m.group(1), m.group(2)) for ln in lines[:root] if (m := _EXCEPTION.match(ln))
              and not any(t in ln for t in _TORCHRUN)]
    signal = next((m.group(0) for ln in lines[root:] if (m := _SIGNAL.search(ln))), None)
    mine = [e for r, e in raised if first is not None and r == first]
    if mine:
        return f"rank {first}: {mine[-1]}"
    if signal:
        return f"rank {first}: {signal}" if first else signal
    if raised:
        return f"rank {raised[-1][0]}: {raised[-1][1]}" if raised[-1][0] else raised[-1][1]
    words = [ln for ln in lines if ln.strip("=-*_ ")]
    return words[-1] if words else "no output"
