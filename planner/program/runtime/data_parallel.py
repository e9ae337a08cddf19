"""Activation checkpointing and data parallel (FSDP2, HSDP, DDP, and a plain all-reduce under TP)."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from .policy import selective_context
from .state import local_part

__all__ = ["apply_recompute", "apply_fsdp", "apply_ddp", "allreduce_grads"]


def apply_recompute(part: nn.Module, blocks: str, full: int, selective: int) -> None:
    """Wrap the chunk's first `full` blocks in full and the next `selective` in selective recomputation
    (non-reentrant: reentrant checkpointing gives wrong results under pipelining)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
    container = part.get_submodule(blocks) if blocks else None
    if container is None or not full + selective:
        return
    for i, key in enumerate(list(container.keys())):
        if i < full:
            container[key] = checkpoint_wrapper(container[key], checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                                preserve_rng_state=True)
        elif i < full + selective:
            container[key] = checkpoint_wrapper(container[key], checkpoint_impl=CheckpointImpl.NO_REENTRANT,
                                                context_fn=selective_context, preserve_rng_state=True)


def apply_fsdp(part: nn.Module, dp_mesh, *, blocks: str, reshard_after_forward: bool, param_dtype=None) -> None:
    """FSDP2 on each owned block, then on the chunk (its embedding, head and norms); a 2-D `dp_mesh`
    (replicate, shard) gives HSDP."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    if blocks:
        for block in part.get_submodule(blocks).values():
            fully_shard(block, mesh=dp_mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp)
    fully_shard(part, mesh=dp_mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp)


def apply_ddp(part: nn.Module, dp_group) -> nn.Module:
    """DDP over the data-parallel group. Not used with tensor parallel: DDP does not take DTensor
    parameters, and torch's private TP-to-DDP transform leaves local shards where checkpoints need
    DTensors; `allreduce_grads` does that case."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(part, process_group=dp_group, gradient_as_bucket_view=True)


def allreduce_grads(parts: list[nn.Module], dp_group) -> None:
    """Average gradients over the data-parallel group in one flat buffer per dtype (DDP's job, for
    layouts DDP cannot wrap)."""
    grads: dict[torch.dtype, list[torch.Tensor]] = {}
    for part in parts:
        for p in part.parameters():
            if p.grad is not None:
                grads.setdefault(p.grad.dtype, []).append(local_part(p.grad))
    for tensors in grads.values():
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.AVG, group=dp_group)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
