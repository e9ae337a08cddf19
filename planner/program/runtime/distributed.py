"""Process-group start-up."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init_distributed", "pick_device"]


def pick_device(cpu: bool = False) -> torch.device:
    """This rank's device: its local GPU (made current), or the CPU with the cores shared evenly among
    the ranks of this machine (one definition for training and for `plan calibrate`'s measurements)."""
    if torch.cuda.is_available() and not cpu:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return torch.device("cpu")


def init_distributed(backend: str, device: torch.device | None = None) -> None:
    """`init_process_group` that survives torchrun's restarts: torch 2.13 reuses the rendezvous keys of
    the failed attempt, so the restarted ranks connect to dead peers (gloo: "connectFullMesh failed ...
    Connection refused"). Under torchrun the keys are put under a per-attempt prefix."""
    from datetime import timedelta
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    device_id = device if device is not None and device.type == "cuda" else None
    if attempt is None or "MASTER_ADDR" not in os.environ:
        dist.init_process_group(backend, device_id=device_id)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    server = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and rank == 0
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=server,
                         timeout=timedelta(minutes=10))
    dist.init_process_group(backend, store=dist.PrefixStore(f"/planner/attempt_{attempt}", base), rank=rank,
                            world_size=world, device_id=device_id)
