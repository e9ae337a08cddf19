"""One representative block measured standalone, and again with its tensor-parallel layers narrowed
by t, to tag each saved tensor `tp`, `sp` or `replicated` under each recompute mode."""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_flatten

from planner.profiling.recorder import Record, Recorder, first_tensor, saved_records, shape_tag, storage_id
from planner.types.profile import Gemm, SavedTensor

__all__ = ["BlockRun", "block_run", "narrow", "tp_gemms", "block_saved", "hook_tp"]


def hook_tp(block: nn.Module, rel_plan: dict[str, str], rec: Recorder) -> list[Any]:
    """Mark ops inside the block's TP projections so their matmuls are flagged as TP-split."""
    def enter(*_):
        rec.in_tp = True

    def leave(*_):
        rec.in_tp = False
    handles = []
    for name in rel_plan:
        mod = block.get_submodule(name)
        handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    return handles


def _fresh(x: Any) -> Any:
    """A leaf copy of a captured input that needs grad like the original did."""
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_(x.requires_grad)
    return x


@dataclass
class BlockRun:
    record: Record
    producer: dict[int, str]
    hidden: torch.Tensor
    inputs: set[int]
    output: torch.Tensor | None
    backward: Record | None = None
    """The backward's memory-bound bytes and op count (None when not run)."""


def block_run(block: nn.Module, args: tuple, kwargs: dict, mode: FakeTensorMode,
               rel_plan: dict[str, str], backward: bool = False) -> BlockRun:
    """One forward of a block alone, recording saved tensors and the selective policy's cache; with
    `backward`, then its backward (gradients of the inputs and parameters, none accumulated into
    `.grad`), recording what that moves."""
    params = {storage_id(p) for p in [*block.parameters(), *block.buffers()]}
    rec = Recorder(params)
    args, kwargs = tuple(_fresh(a) for a in args), {k: _fresh(v) for k, v in kwargs.items()}
    handles = hook_tp(block, rel_plan, rec)
    try:
        with mode, rec, torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
            out = block(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    hidden = first_tensor(args)
    inputs = {storage_id(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
    rec.keep.append((args, kwargs, out))
    out_t = first_tensor(out)
    return BlockRun(rec.layer, rec.producer, hidden, inputs, out_t,
                    _backward(block, args, kwargs, out_t, mode, params) if backward else None)


def _backward(block: nn.Module, args: tuple, kwargs: dict, out: torch.Tensor | None, mode: FakeTensorMode,
              params: set[int]) -> Record | None:
    """Record the block's backward from a gradient shaped like its output: every op autograd runs,
    memory-bound bytes counted as in forward (the recorder leaves matmuls and attention kernels out)."""
    if out is None or not out.requires_grad:
        return None
    wrt = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    wrt += [p for p in block.parameters() if p.requires_grad]
    rec = Recorder(params)
    with mode:
        grad = torch.ones_like(out)
        with rec:
            torch.autograd.grad(out, wrt, grad, allow_unused=True)
    return rec.layer


def tp_gemms(main: BlockRun, part: BlockRun | None, t: int) -> tuple[Gemm, ...]:
    """The block's GEMMs, each flagged `tp` when one TP rank runs 1/t of it: inside a split projection
    (flagged while recording), or, matched by position with the block narrowed by t, a GEMM whose work
    shrank exactly t-fold, like attention written as explicit matmuls over the heads TP divides."""
    gemms = main.record.gemms
    if part is None or len(part.record.gemms) != len(gemms):
        return tuple(gemms)
    return tuple(replace(g, tp=True) if not g.tp and p.flops * t == g.flops else g
                 for g, p in zip(gemms, part.record.gemms))


def narrow(block: nn.Module, rel_plan: dict[str, str], t: int) -> nn.Module:
    """A meta copy of `block` whose TP projections hold 1/t of their features, as one TP rank does."""
    block = copy.deepcopy(block)
    for name, style in rel_plan.items():
        lin = block.get_submodule(name)
        out_f, in_f = lin.weight.shape
        shape = (out_f // t, in_f) if style == "colwise" else (out_f, in_f // t)
        lin.weight = nn.Parameter(torch.empty(shape, device="meta"))
        if lin.bias is not None and style == "colwise":
            lin.bias = nn.Parameter(torch.empty(out_f // t, device="meta"))
    return block


def _tp_tags(full: list[torch.Tensor], part: list[torch.Tensor], t: int, tokens: int) -> list[str] | None:
    """Match the full and the 1/t block's saved tensors by order; None if the runs do not line up."""
    if len(full) != len(part):
        return None
    tags = []
    for a, b in zip(full, part):
        na, nb = a.untyped_storage().nbytes(), b.untyped_storage().nbytes()
        tags.append("tp" if nb * t == na and t > 1 else shape_tag(a, tokens) if na == nb else "replicated")
    return tags


def _mode_stores(run: BlockRun) -> dict[str, dict[int, torch.Tensor]]:
    """Storages kept under each recompute mode: all saved; input + policy cache; input only."""
    hidden = {storage_id(run.hidden): run.hidden}
    return {"none": run.record.saved, "selective": {**hidden, **run.record.must_save}, "full": hidden}


def block_saved(run: BlockRun, part: BlockRun | None, t: int, tokens: int) -> dict[str, tuple]:
    """Saved storages of one block under each recompute mode, with shard tags."""
    part_stores = _mode_stores(part) if part is not None else None
    out = {}
    for mode, store in _mode_stores(run).items():
        tags = None
        if part_stores is not None:
            tags = _tp_tags(list(store.values()), list(part_stores[mode].values()), t, tokens)
        out[mode] = saved_records(store, run.producer, run.inputs, tokens, tags)
        if mode != "none":
            out[mode] += (_RNG_STATE,)
    return out


# A checkpointed region keeps the CPU generator's state to replay dropout in backward
# (`preserve_rng_state=True`); on GPUs the device generator's few bytes come on top.
_RNG_STATE = SavedTensor(nbytes=torch.get_rng_state().numel(), shard="replicated", op="rng_state",
                         shape=tuple(torch.get_rng_state().shape), dtype="uint8")
