"""Materialising a chunk, weights tied across stages, clipping, what a rank holds, and loading a plain
state dict by the plain model's names."""
from __future__ import annotations

import re
import warnings
import weakref
from typing import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["materialise", "clean_name", "named_local_params", "TiedWeights", "clip_grad_norm", "held_bytes",
           "ActivationMeter", "load_full"]


def materialise(part: nn.Module, device: torch.device, init: Callable[[nn.Module], None] | None, *, seed: int,
                world_mesh) -> None:
    """Allocate this rank's shard of the chunk and initialise it with the model's own initialisation
    (`init`; None when the chunk was built with real weights, which are moved as they are); then make
    copies that must be equal (replicated across TP or DP ranks) equal by broadcasting from the first
    rank of each such axis. Seeds differ per rank so shards of one tensor differ."""
    _to_empty(part, device)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # DTensor's random ops on a CPU mesh draw the same values on every rank (torch warns that they
        # "may not have complete support"): the per-rank seed above makes shards differ, and the
        # broadcasts below make replicated copies equal, so the warning does not apply here
        warnings.filterwarnings("ignore", message="DTensor random operators may not have complete support")
        torch.manual_seed(seed * 1_000_003 + dist.get_rank())
        with torch.no_grad():
            if init is not None:
                init(part)
    axes = [a for a in world_mesh.mesh_dim_names if a != "pp" and world_mesh[a].size() > 1]
    with torch.no_grad():
        for _, p in named_local_params(part):
            sharded = _sharded_axes(p)
            for axis in axes:
                if axis not in sharded:
                    group = world_mesh[axis].get_group()
                    dist.broadcast(local_part(p), src=dist.get_global_rank(group, 0), group=group)
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
                if not t.is_meta and t.device == device:
                    continue  # built for real (buffers, or a model without init_weights): kept as it is
                if id(t) not in memo:  # real tensors on another device move with their values
                    new = torch.empty_like(t, device=device) if t.is_meta else t.detach().to(device)
                    memo[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if wrap else new
                table[key] = memo[id(t)]


def local_part(t: torch.Tensor) -> torch.Tensor:
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
                dist.broadcast(local_part(params[0]), src=dist.get_global_rank(group, 0), group=group)

    def sum_grads(self) -> None:
        for group, params, _ in self.entries:
            if params[0].grad is not None:
                dist.all_reduce(local_part(params[0].grad), group=group)

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
            key = (g.dtype, *((id(g.device_mesh), i) for i in dims))  # one dtype a multi-tensor norm
            if key not in buckets:
                buckets[key] = [[], [g.device_mesh.get_group(i) for i in dims]]
            buckets[key][0].append(local_part(g))
    total = torch.zeros((), dtype=torch.float64, device=grads[0].device if grads else "cpu")
    for tensors, groups in buckets.values():
        # one multi-tensor norm over the bucket (as torch.nn.utils.clip_grad_norm_), squares summed in
        # fp64. Kernels per tensor (three, or one) made clipping GPT-3 1.3B's 4.9 GiB of gradients take
        # 23-24 ms on an H200 (2026-12-04), launch-bound; this form was not timed there
        value = torch.stack(torch._foreach_norm(tensors)).double().pow(2).sum()
        for group in groups:
            dist.all_reduce(value, group=group)
        total = total + value.to(total.device)
    if pp_group is not None:
        dist.all_reduce(total, group=pp_group)
    norm = total.sqrt()
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    by_kind: dict[tuple, list] = {}
    for g in grads:
        by_kind.setdefault((g.dtype, g.device), []).append(local_part(g))
    for (dtype, device), tensors in by_kind.items():
        torch._foreach_mul_(tensors, coef.to(device=device, dtype=dtype))
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
            out["param_bytes"] += local_part(p).numel() * p.element_size()
            if p.grad is not None:
                out["grad_bytes"] += local_part(p.grad).numel() * p.grad.element_size()
    for opt in optimizers:
        for state in opt.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and k != "step":
                    out["optimizer_bytes"] += local_part(v).numel() * v.element_size()
    return out


class ActivationMeter:
    """Peak bytes of the tensors autograd saves for backward while active (each storage once; parameters,
    including FSDP's unsharded ones, and meta tensors excluded): the same instrument the planner's
    profiler measures with, so the two are comparable. A diagnostic: it walks the parameters per save."""

    def __init__(self, parts: list[nn.Module]):
        self.parts, self.live, self.peak, self.refs = parts, 0, 0, {}

    def _params(self) -> set[int]:
        return {local_part(p).untyped_storage().data_ptr() for part in self.parts for p in part.parameters()}

    def _pack(self, t: torch.Tensor):
        local = local_part(t)
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
                full = state_dict[name].to(device=local_part(p).device, dtype=p.dtype)
                if isinstance(p, DTensor):
                    piece = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local()
                    p.to_local().copy_(piece)
                else:
                    p.copy_(full)
            for name, b in part.named_buffers():
                if clean_name(name) in state_dict:
                    b.copy_(state_dict[clean_name(name)])
