"""Tensor parallel (and sequence parallel) over the blocks' projections."""
from __future__ import annotations

import torch.nn as nn

from .policy import with_main_input

__all__ = ["apply_tp"]


_HEAD_ATTRS = ("n_head", "n_heads", "num_heads", "n_kv_heads", "num_kv_heads", "num_key_value_heads",
               "n_local_heads", "n_local_kv_heads")


def apply_tp(part: nn.Module, tp_mesh, tp_plan: dict[str, str], *, blocks: str, sequence_parallel: bool,
             first_block: int, last_block: int) -> None:
    """Split each owned block's projections colwise/rowwise as `tp_plan` says (patterns with `*` for the
    block index), divide explicit head-count attributes, and with sequence parallel keep the residual
    stream sharded along the sequence between the projections (norms run on sequence shards)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel, SequenceParallel,
                                                   parallelize_module)
    tp = tp_mesh.size()
    container = part.get_submodule(blocks)
    for key, block in container.items():
        local = {}
        for pattern, style in tp_plan.items():
            if not pattern.startswith(f"{blocks}.*."):
                continue
            rel = pattern[len(blocks) + 3:]
            if style == "colwise":
                local[rel] = ColwiseParallel()
            else:
                local[rel] = RowwiseParallel(output_layouts=Shard(1)) if sequence_parallel else RowwiseParallel()
        parents = sorted({n.rpartition(".")[0] for n, s in local.items() if s.__class__ is ColwiseParallel})
        if sequence_parallel:
            for name, mod in block.named_modules():
                if name and type(mod).__name__.endswith("Norm") and name not in local:
                    local[name] = SequenceParallel()
        parallelize_module(block, tp_mesh, local)
        for p in parents:
            parent = block.get_submodule(p) if p else block
            for attr in _HEAD_ATTRS:
                if isinstance(getattr(parent, attr, None), int):
                    setattr(parent, attr, getattr(parent, attr) // tp)
            # one replicated DTensor input per parent: its colwise children's input gradients add up as
            # one partial sum, reduced once in backward (not once per q/k/v projection)
            hook = _gather_sequence if sequence_parallel else _replicate_input
            parent.register_forward_pre_hook(hook(tp_mesh, Shard, Replicate), with_kwargs=True)
        if sequence_parallel and container.position(key) == first_block:
            block.register_forward_pre_hook(_scatter_sequence(tp_mesh, Shard, Replicate), with_kwargs=True)
        if sequence_parallel and container.position(key) == last_block:
            block.register_forward_hook(_gather_output(tp_mesh, Shard, Replicate))


def _gather_sequence(mesh, Shard, Replicate):
    """Pre-hook of a module holding colwise projections: all-gather the sequence-sharded input once
    (a replicated DTensor, so the backward is a single reduce-scatter)."""
    from torch.distributed.tensor import DTensor

    def gather(x):
        if not isinstance(x, DTensor):
            x = DTensor.from_local(x, mesh, [Shard(1)], run_check=False)
        return x.redistribute(mesh, [Replicate()])
    return lambda module, args, kwargs: with_main_input(args, kwargs, gather)


def _replicate_input(mesh, Shard, Replicate):
    """Pre-hook of a module holding colwise projections (no sequence parallel): its input as one
    replicated DTensor, so the backward all-reduces the input gradient once for all the projections."""
    from torch.distributed.tensor import DTensor

    def as_replicated(x):
        return x if isinstance(x, DTensor) else DTensor.from_local(x, mesh, [Replicate()], run_check=False)
    return lambda module, args, kwargs: with_main_input(args, kwargs, as_replicated)


def _scatter_sequence(mesh, Shard, Replicate):
    """Pre-hook of the model's first block: keep this rank's slice of the (replicated) sequence."""
    from torch.distributed.tensor import DTensor

    def scatter(x):
        return DTensor.from_local(x, mesh, [Replicate()], run_check=False).redistribute(mesh, [Shard(1)]).to_local()
    return lambda module, args, kwargs: with_main_input(args, kwargs, scatter)


def _gather_output(mesh, Shard, Replicate):
    """Forward hook of the model's last block: all-gather the sequence for the replicated head."""
    from torch.distributed.tensor import DTensor

    def hook(module, args, out):
        full = DTensor.from_local(out, mesh, [Shard(1)], run_check=False).redistribute(mesh, [Replicate()])
        # to_local() is a view; FSDP registers its pre-backward hook on the block's output, and an in-place
        # op on a view would drop it (FSDP2 warns): hand on a tensor of its own (one copy per micro-batch)
        return full.to_local().clone()
    return hook
