"""Tensor parallel (and sequence parallel) over the blocks' projections."""
from __future__ import annotations

import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .policy import with_main_input

__all__ = ["apply_tp"]


_HEAD_ATTRS = ("n_head", "n_heads", "num_heads", "n_kv_heads", "num_kv_heads", "num_key_value_heads",
               "n_local_heads", "n_local_kv_heads")


def apply_tp(part: nn.Module, tp_mesh, tp_plan: dict[str, str], *, blocks: str, sequence_parallel: bool,
             first_block: int, last_block: int) -> None:
    """Split each owned block's projections colwise/rowwise as `tp_plan` says (patterns with `*` for the
    block index) and the embedding and head along the vocabulary, divide explicit head-count attributes, and with sequence parallel keep the residual
    stream sharded along the sequence between the projections (norms run on sequence shards)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel, SequenceParallel,
                                                   parallelize_module)
    tp = tp_mesh.size()
    _apply_vocab(part, tp_mesh, tp_plan)
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


def _apply_vocab(part: nn.Module, tp_mesh, tp_plan: dict[str, str]) -> None:
    """Split the chunk's input embedding and LM head along the vocabulary (Megatron-LM's
    VocabParallelEmbedding and column-parallel output layer; torchtitan's plan). The head is torch's
    ColwiseParallel with its logits gathered, so any loss sees the whole vocabulary. The embedding is
    Megatron's: each rank looks up the ids in its rows, zeroes the others, and the partial sums are
    all-reduced (identity in backward), so its weight gradient is the rank's rows only (torch's
    RowwiseParallel embedding computes a replicated full-vocabulary gradient on every rank). Weights
    tied inside the chunk (GPT's embedding = head) are tied again afterwards: parallelize_module wraps
    each module's parameter in a new one."""
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor
    from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in part.modules():
        for leaf, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod, leaf))
    for path, style in tp_plan.items():
        try:
            mod = part.get_submodule(path)
        except AttributeError:
            continue
        if style == "vocab_embedding" and isinstance(mod, nn.Embedding):
            mod.weight = nn.Parameter(distribute_tensor(mod.weight, tp_mesh, [Shard(0)]))
            mod.forward = functools.partial(_vocab_embedding, mod, tp_mesh)
        elif style == "vocab_head" and isinstance(mod, nn.Linear):
            parallelize_module(mod, tp_mesh, ColwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()))
    for holders in owners.values():
        first, leaf = holders[0]
        for mod, name in holders[1:]:
            setattr(mod, name, getattr(first, leaf))


def _vocab_embedding(mod: nn.Embedding, mesh, ids: torch.Tensor) -> torch.Tensor:
    """Forward of a vocabulary-parallel embedding: this rank's rows [lo, lo + rows) of the table."""
    w = mod.weight.to_local() if hasattr(mod.weight, "to_local") else mod.weight
    rows = w.shape[0]
    lo = mesh.get_local_rank() * rows
    outside = (ids < lo) | (ids >= lo + rows)
    pad = mod.padding_idx - lo if mod.padding_idx is not None and lo <= mod.padding_idx < lo + rows else None
    out = F.embedding(torch.where(outside, 0, ids - lo), w, pad, mod.max_norm, mod.norm_type,
                      mod.scale_grad_by_freq, mod.sparse)
    return _SumForward.apply(out.masked_fill(outside.unsqueeze(-1), 0), mesh.get_group())


class _SumForward(torch.autograd.Function):
    """All-reduce (sum) in forward, identity in backward: Megatron's reduce_from_tensor_model_parallel_region."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


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
