"""`plan cluster --detect`: describe the local machine's GPUs and links from CUDA and nvidia-smi."""
from __future__ import annotations

import shutil
import subprocess

import torch

from planner.errors import PlannerError

__all__ = ["detect"]


def detect() -> str:
    """GPU names and memory from torch.cuda, and `nvidia-smi topo -m` when it is installed."""
    if not torch.cuda.is_available():
        raise PlannerError(f"detecting the local cluster needs CUDA, and torch {torch.__version__} sees no CUDA device here; "
                           "describe the cluster with --gpus and --gpu instead")
    lines = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        lines.append(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
    if shutil.which("nvidia-smi"):
        topo = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30)
        lines += ["", topo.stdout.strip()]
    return "\n".join(lines)
