"""Parallelisation helpers for the emitted training program; depends on torch only.

This module is copied verbatim next to the emitted `train.py` (as `planner_runtime.py`), so it must
never import `planner`. It is also the single definition of what the planner and the program must agree
on: the "selective" recomputation policy (the profiler measures with it), the per-chunk recompute syntax
and the default loss. Each `apply_*` function does one parallelism over a `DeviceMesh`, applied in
torchtitan's order: pipeline split -> tensor parallel -> activation checkpointing -> FSDP -> materialise
-> DDP.
"""
from __future__ import annotations

import copy
import math
import os
import re
import weakref
from typing import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["init_distributed", "SELECTIVE_SAVE_OPS", "selective_policy", "selective_context", "parse_recompute", "default_loss",
           "split_chunk", "apply_tp", "apply_recompute", "apply_fsdp", "apply_ddp", "materialise",
           "TiedWeights", "clip_grad_norm", "held_bytes", "clean_name", "named_local_params", "load_full"]

_aten = torch.ops.aten

# Selective recomputation keeps the outputs of the expensive ops (matmuls and fused attention kernels,
# whose recomputation would cost FLOPs) and recomputes everything else (norms, activations, dropout,
# residual adds: cheap, memory-bound ops). Same spirit as Megatron-LM's selective recompute and
# torchtitan's op-level SAC, without torchtitan's "every other matmul" rule.
SELECTIVE_SAVE_OPS: frozenset = frozenset({
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten.convolution.default,
    _aten._scaled_dot_product_flash_attention.default,
    _aten._scaled_dot_product_efficient_attention.default,
    _aten._scaled_dot_product_cudnn_attention.default,
    _aten._scaled_dot_product_flash_attention_for_cpu.default,
})


def selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Save the outputs of SELECTIVE_SAVE_OPS, recompute all other ops in backward."""
    return CheckpointPolicy.MUST_SAVE if op in SELECTIVE_SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def selective_context():
    """`context_fn` for `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`."""
    return create_selective_checkpoint_contexts(selective_policy)


_PART = re.compile(r"^(full|selective)(?::(\d+))?$")


def parse_recompute(mode: str, blocks: int) -> tuple[int, int]:
    """(blocks under full recompute, blocks under selective) of a chunk with `blocks` blocks; the chunk's
    first blocks are the full ones, then the selective ones, the rest keep everything.

    `none`, `selective`, `full`, or parts joined by `+`: `full:K` (K blocks), `selective:J`, and a
    part without a count takes all remaining blocks (`full:2+selective` = 2 full, the rest selective)."""
    if mode == "none":
        return 0, 0
    counts = {"full": 0, "selective": 0}
    left = blocks
    for part in mode.split("+"):
        m = _PART.match(part)
        if not m or counts[m.group(1)]:
            raise ValueError(f"recompute {mode!r}: use none, selective, full, or full:K+selective:J")
        n = min(left, int(m.group(2))) if m.group(2) else left
        counts[m.group(1)] = n
        left -= n
    return counts["full"], counts["selective"]


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (token logits or class logits)."""
    return F.cross_entropy(outputs.flatten(0, -2).float(), targets.flatten())


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


# ---------------------------------------------------------------------------------------------------
# Pipeline split: a chunk is the user's model with the modules it does not own replaced by stand-ins
# that compute on the meta device (no memory, no FLOPs), so the user's own forward still runs unchanged.

class _Absent(nn.Module):
    """Stands in for a module another pipeline stage owns: runs the original on meta tensors so the
    shapes flowing through the user's forward stay right, and holds no parameters."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self._meta = [original.to("meta")]  # a list, so it is not registered as a submodule

    def forward(self, *args, **kwargs):
        to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
        return self._meta[0](*[to_meta(a) for a in args], **{k: to_meta(v) for k, v in kwargs.items()})


class _Blocks(nn.ModuleDict):
    """The blocks a chunk owns, keyed by their original index (so parameter names stay `blocks.7.*`),
    iterated in order like the `nn.ModuleList` it replaces."""

    def __iter__(self):
        return iter(self.values())

    def __getitem__(self, key):
        return super().__getitem__(str(key))


def _chunk_forward(self, *args, **kwargs):
    """Forward of a pipeline chunk: the first chunk takes the model's inputs; a later chunk takes the
    previous chunk's output and runs the user's forward on placeholder inputs of the micro-batch's
    shape, with that output fed into its first module; a chunk before the last returns what its last
    module produced."""
    state = self._pipeline
    if not state["first"]:
        state["incoming"] = args[0]
        args = tuple(torch.zeros(s, dtype=d, device=args[0].device) for s, d in state["input_specs"])
    out = state["forward"](self, *args, **kwargs)
    if state["last"]:
        return out
    captured, state["captured"], state["incoming"] = state["captured"], None, None
    return captured


def split_chunk(model: nn.Module, owned: list[str], *, blocks: str, first: bool, last: bool,
                input_specs: list[tuple[tuple[int, ...], torch.dtype]]) -> nn.Module:
    """A deep copy of (meta) `model` holding only the modules named in `owned` (e.g. `["wte", "wpe",
    "drop", "blocks.0"]`), whose forward maps the previous chunk's output to this chunk's output.
    Parameter names are those of the whole model. Tied weights stay tied inside the chunk."""
    part = copy.deepcopy(model)
    prefix = f"{blocks}."
    mine = [n[len(prefix):] for n in owned if blocks and n.startswith(prefix)]
    if blocks:
        container = part.get_submodule(blocks)
        _set(part, blocks, _Blocks({k: container[int(k)] for k in mine}))
    for name, _ in list(model.named_children()):
        if name != blocks and name not in owned:
            _set(part, name, _Absent(part.get_submodule(name)))
    if first and last:
        return part
    enter = (blocks, mine[0]) if mine and not first else (owned[0], None)
    leave = (blocks, mine[-1]) if mine and not last else (owned[-1], None)
    part._pipeline = {"first": first, "last": last, "input_specs": input_specs, "incoming": None,
                      "captured": None, "forward": type(part).forward, "enter": enter, "leave": leave}
    part.__class__ = type(f"Chunk{type(part).__name__}", (type(part),), {"forward": _chunk_forward})
    return part


def attach_chunk_hooks(part: nn.Module) -> None:
    """Hooks that feed the incoming activation to the chunk's first module and catch its last module's
    output. Attached to the outermost wrappers (after checkpointing and FSDP), so a recomputation in
    backward never sees them, and first on entry so FSDP's own input handling sees the real input."""
    state = getattr(part, "_pipeline", None)
    if state is None:
        return

    def resolve(where):
        name, key = where
        return part.get_submodule(name)[key] if key is not None else part.get_submodule(name)
    if not state["first"]:
        def enter(module, args, kwargs):
            return (state["incoming"], *args[1:]), kwargs
        resolve(state["enter"]).register_forward_pre_hook(enter, with_kwargs=True, prepend=True)
    if not state["last"]:
        def leave(module, args, output):
            state["captured"] = output
        resolve(state["leave"]).register_forward_hook(leave)


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


# ---------------------------------------------------------------------------------------------------
# Tensor parallel

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
            if sequence_parallel:
                parent.register_forward_pre_hook(_gather_sequence(tp_mesh, Shard, Replicate))
        if sequence_parallel and int(key) == first_block:
            block.register_forward_pre_hook(_scatter_sequence(tp_mesh, Shard, Replicate))
        if sequence_parallel and int(key) == last_block:
            block.register_forward_hook(_gather_output(tp_mesh, Shard, Replicate))


def _gather_sequence(mesh, Shard, Replicate):
    """Pre-hook of a module holding colwise projections: all-gather the sequence-sharded input once
    (a replicated DTensor, so the backward is a single reduce-scatter)."""
    from torch.distributed.tensor import DTensor

    def hook(module, args):
        x = args[0]
        if not isinstance(x, DTensor):
            x = DTensor.from_local(x, mesh, [Shard(1)], run_check=False)
        return (x.redistribute(mesh, [Replicate()]), *args[1:])
    return hook


def _scatter_sequence(mesh, Shard, Replicate):
    """Pre-hook of the model's first block: keep this rank's slice of the (replicated) sequence."""
    from torch.distributed.tensor import DTensor

    def hook(module, args):
        x = DTensor.from_local(args[0], mesh, [Replicate()], run_check=False)
        return (x.redistribute(mesh, [Shard(1)]).to_local(), *args[1:])
    return hook


def _gather_output(mesh, Shard, Replicate):
    """Forward hook of the model's last block: all-gather the sequence for the replicated head."""
    from torch.distributed.tensor import DTensor

    def hook(module, args, out):
        return DTensor.from_local(out, mesh, [Shard(1)], run_check=False).redistribute(mesh, [Replicate()]).to_local()
    return hook


# ---------------------------------------------------------------------------------------------------
# Activation checkpointing, data parallel, materialisation

def apply_recompute(part: nn.Module, blocks: str, mode: str) -> None:
    """Wrap the chunk's first K blocks in full and the next J in selective recomputation (non-reentrant:
    reentrant checkpointing gives wrong results under pipelining)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
    container = part.get_submodule(blocks) if blocks else None
    if container is None or mode == "none":
        return
    keys = list(container.keys())
    full, selective = parse_recompute(mode, len(keys))
    for i, key in enumerate(keys):
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
                grads.setdefault(p.grad.dtype, []).append(_local(p.grad))
    for tensors in grads.values():
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.AVG, group=dp_group)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def materialise(part: nn.Module, device: torch.device, init: Callable[[nn.Module], None], *, seed: int,
                world_mesh) -> None:
    """Allocate this rank's shard of the chunk and initialise it with the model's own initialisation;
    then make copies that must be equal (replicated across TP or DP ranks) equal by broadcasting from
    the first rank of each such axis. Seeds differ per rank so shards of one tensor differ."""
    _to_empty(part, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + dist.get_rank())
        with torch.no_grad():
            init(part)
    axes = [a for a in world_mesh.mesh_dim_names if a != "pp" and world_mesh[a].size() > 1]
    with torch.no_grad():
        for _, p in named_local_params(part):
            sharded = _sharded_axes(p)
            for axis in axes:
                if axis not in sharded:
                    group = world_mesh[axis].get_group()
                    dist.broadcast(_local(p), src=dist.get_global_rank(group, 0), group=group)
        for b in part.buffers():
            for axis in axes:
                group = world_mesh[axis].get_group()
                dist.broadcast(b, src=dist.get_global_rank(group, 0), group=group)


def _to_empty(module: nn.Module, device: torch.device) -> None:
    """`Module.to_empty` that keeps tied parameters tied (torch's makes a new tensor per module that
    holds one, silently untying them)."""
    memo: dict[int, torch.Tensor] = {}
    for mod in module.modules():
        for table, wrap in ((mod._parameters, True), (mod._buffers, False)):
            for key, t in table.items():
                if t is None:
                    continue
                if id(t) not in memo:
                    new = torch.empty_like(t, device=device)
                    memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if wrap else new
                table[key] = memo[id(t)]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _sharded_dims(t: torch.Tensor) -> list[int]:
    """Mesh dims a DTensor is split over (none for a plain tensor). Not `is_shard()`: FSDP over a TP
    dim-0 split uses `_StridedShard`, which does not report as one."""
    if getattr(t, "device_mesh", None) is None:
        return []
    return [i for i, pl in enumerate(t.placements) if not pl.is_replicate()]


def _sharded_axes(p: torch.Tensor) -> set[str]:
    return {p.device_mesh.mesh_dim_names[i] for i in _sharded_dims(p)}


_WRAPPERS = re.compile(r"(^|\.)(module|_checkpoint_wrapped_module|_fsdp_wrapped_module|_orig_mod)(?=\.|$)")


def clean_name(name: str) -> str:
    """A parameter's name in the plain model (without DDP / checkpoint / compile wrapper prefixes)."""
    return _WRAPPERS.sub("", name).lstrip(".")


def named_local_params(part: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    """(plain-model name, parameter) of a chunk, tied parameters once."""
    return ((clean_name(n), p) for n, p in part.named_parameters())


# ---------------------------------------------------------------------------------------------------
# Weights tied across pipeline stages (GPT: input embedding = LM head)

class TiedWeights:
    """Copies of one weight held by several pipeline ranks (Megatron-LM's embedding group): they start
    equal (broadcast from the first holder) and their gradients are summed every step."""

    def __init__(self, tied: list[list[str]], chunk_names: list[list[str]], world_mesh, parts: list[nn.Module]):
        pp = world_mesh["pp"].size() if "pp" in world_mesh.mesh_dim_names else 1
        self.entries = []  # (group, [local params], first holder?)
        if pp == 1:
            return
        mesh = world_mesh.mesh.movedim(world_mesh.mesh_dim_names.index("pp"), -1).reshape(-1, pp)
        my_pp = world_mesh["pp"].get_local_rank()
        local = {n: p for part in parts for n, p in named_local_params(part)}
        for names in tied:
            holders = sorted({c % pp for c, owned in enumerate(chunk_names) for n in names
                              if any(n.startswith(f"{o}.") for o in owned)})
            if len(holders) < 2:
                continue
            group, _ = dist.new_subgroups_by_enumeration([[int(r) for r in row[holders]] for row in mesh])
            mine = [local[n] for n in names if n in local]
            if group is not None and mine:
                self.entries.append((group, mine, my_pp == holders[0]))

    def broadcast(self) -> None:
        with torch.no_grad():
            for group, params, _ in self.entries:
                dist.broadcast(_local(params[0]), src=dist.get_global_rank(group, 0), group=group)

    def sum_grads(self) -> None:
        for group, params, _ in self.entries:
            if params[0].grad is not None:
                dist.all_reduce(_local(params[0].grad), group=group)

    def duplicates(self) -> set[int]:
        """ids of the copies not to count twice in the gradient norm."""
        return {id(p) for _, params, first in self.entries if not first for p in params}


def clip_grad_norm(parts: list[nn.Module], max_norm: float, pp_group, skip: set[int]) -> torch.Tensor:
    """Clip the gradients of the whole model (all stages, shards and tensor-parallel pieces) to
    `max_norm`; returns the total norm before clipping. Replicated copies are counted once: a DTensor's
    squares are summed over the mesh axes it is sharded on, plain tensors are already whole."""
    from torch.distributed.tensor import DTensor, Replicate
    buckets: dict[tuple, list] = {}
    grads = []
    for part in parts:
        for p in part.parameters():
            if p.grad is None:
                continue
            g = p.grad
            if isinstance(g, DTensor) and any(pl.is_partial() for pl in g.placements):
                g = p.grad = g.redistribute(placements=[Replicate() if pl.is_partial() else pl for pl in g.placements])
            grads.append(g)
            if id(p) in skip:
                continue
            dims = _sharded_dims(g)
            key = tuple((id(g.device_mesh), i) for i in dims)
            if key not in buckets:
                groups = [g.device_mesh.get_group(i) for i in dims]
                buckets[key] = [torch.zeros((), dtype=torch.float64, device=g.device), groups]
            buckets[key][0] += _local(g).double().pow(2).sum()
    total = torch.zeros((), dtype=torch.float64, device=grads[0].device if grads else "cpu")
    for value, groups in buckets.values():
        for group in groups:
            dist.all_reduce(value, group=group)
        total = total + value.to(total.device)
    if pp_group is not None:
        dist.all_reduce(total, group=pp_group)
    norm = total.sqrt()
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        _local(g).mul_(coef.to(g.dtype))
    return norm.float()


# ---------------------------------------------------------------------------------------------------
# What a rank holds, and checkpoints in the plain model's names

def held_bytes(parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state this rank holds (local shards; AdamW's scalar
    `step` counters excluded, as the planner's memory model states)."""
    out = {"param_bytes": 0, "grad_bytes": 0, "optimizer_bytes": 0}
    seen = set()
    for part in parts:
        for p in part.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            out["param_bytes"] += _local(p).numel() * p.element_size()
            if p.grad is not None:
                out["grad_bytes"] += _local(p.grad).numel() * p.grad.element_size()
    for opt in optimizers:
        for state in opt.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    out["optimizer_bytes"] += _local(v).numel() * v.element_size()
    return out


class ActivationMeter:
    """Peak bytes of the tensors autograd saves for backward while active (each storage once; parameters,
    including FSDP's unsharded ones, and meta tensors excluded): the same instrument the planner's
    profiler measures with, so the two are comparable. A diagnostic: it walks the parameters per save."""

    def __init__(self, parts: list[nn.Module]):
        self.parts, self.live, self.peak, self.refs = parts, 0, 0, {}

    def _params(self) -> set[int]:
        return {_local(p).untyped_storage().data_ptr() for part in self.parts for p in part.parameters()}

    def _pack(self, t: torch.Tensor):
        local = _local(t)
        if local.device.type != "meta" and local.untyped_storage().data_ptr() not in self._params():
            key = local.untyped_storage().data_ptr()
            if key not in self.refs:
                self.refs[key] = [0, local.untyped_storage().nbytes()]
                self.live += self.refs[key][1]
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self._release, key)
        return t

    def _release(self, key: int) -> None:
        entry = self.refs.get(key)
        if entry is not None:
            entry[0] -= 1
            if entry[0] == 0:
                self.live -= entry[1]
                del self.refs[key]

    def __call__(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def load_full(parts: list[nn.Module], state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a plain (unsharded) state dict into this rank's shards, by the plain model's names; each
    rank slices its own piece (no communication)."""
    from torch.distributed.tensor import DTensor, distribute_tensor
    with torch.no_grad():
        for part in parts:
            for name, p in named_local_params(part):
                if name not in state_dict:
                    raise KeyError(f"the state dict has no '{name}'")
                full = state_dict[name].to(device=_local(p).device, dtype=p.dtype)
                if isinstance(p, DTensor):
                    piece = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local()
                    p.to_local().copy_(piece)
                else:
                    p.copy_(full)
            for name, b in part.named_buffers():
                if clean_name(name) in state_dict:
                    b.copy_(state_dict[clean_name(name)])


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total` (step is
    1-based: the LR of the step-th optimizer step)."""
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
