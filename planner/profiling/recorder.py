"""The instrument: a dispatch mode that records, per layer, the matmuls (M, N, K), attention calls,
memory-bound bytes and the storages autograd saves; FLOP formulas torch lacks; fake parameters."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.utils.flop_counter as flop_counter
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from planner.program.runtime.policy import SELECTIVE_SAVE_OPS
from planner.types.profile import Attention, Gemm, SavedTensor

__all__ = ["Record", "Recorder", "FLOP_MAP", "fakeify", "storage_id", "saved_records", "first_tensor", "tensor_bytes", "shape_tag"]

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}
_ATTENTION = {op for op in SELECTIVE_SAVE_OPS if "scaled_dot_product" in str(op)}


def _sdpa_backward_model_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Model FLOPs of attention's backward: twice the forward (dQ, dK, dV, dScores), as for any matmul.

    torch's own formula adds the flash kernel's recomputation of QK^T (2.5x forward). That is
    hardware work, like activation recomputation, so it stays out of model FLOPs (MFU) and is left to
    the cost model's hardware-FLOPs accounting.
    """
    return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


FLOP_MAP = {  # CPU fake tensors dispatch SDPA here; torch's counter has no formula for it
    _aten._scaled_dot_product_flash_attention_for_cpu: flop_counter.sdpa_flop.__wrapped__,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_model_flops,
}


def _argument(func, args: tuple, kwargs: dict | None, name: str, default: Any) -> Any:
    """An op's argument by its schema name, passed positionally or by keyword."""
    for i, a in enumerate(func._schema.arguments):
        if a.name == name:
            return (kwargs or {}).get(name, args[i] if i < len(args) else default)
    return default


def storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


@dataclass
class Record:
    """What one forward pass showed for one layer; mutable while recording."""

    gemms: list[Gemm] = field(default_factory=list)
    attention: list[Attention] = field(default_factory=list)
    mem_bytes: int = 0
    ops: int = 0
    saved: dict[int, torch.Tensor] = field(default_factory=dict)  # storage -> first saved view
    must_save: dict[int, torch.Tensor] = field(default_factory=dict)  # selective policy's cache


class Recorder(TorchDispatchMode):
    """Attributes every forward op to the current layer: matmul shapes, attention, memory-bound bytes."""

    def __init__(self, params: set[int]):
        super().__init__()
        self.params = params
        self.layer: Record = Record()
        self.in_tp = False  # inside a colwise/rowwise projection
        self.producer: dict[int, str] = {}
        self.keep: list[Any] = []  # keeps storages alive so ids are never reused mid-run

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        self.keep.append(outs)
        name = func.overloadpacket.__name__
        self.layer.ops += 1
        fresh = {storage_id(t) for t in outs} - {storage_id(t) for t in ins}
        for t in outs:  # credit new storages, and in-place writers (dropout's bernoulli_), not views
            if storage_id(t) in fresh or name.endswith("_"):
                self.producer[storage_id(t)] = name
        if func in _MATMULS:
            self.layer.gemms.append(_gemm(func, args, self.in_tp))
        elif func == _aten.convolution.default:
            self.layer.gemms.append(_conv_gemm(args, outs[0], self.in_tp))
        elif func in _ATTENTION:
            q, k = args[0], args[1]
            self.layer.attention.append(Attention(batch=q.shape[0], heads=q.shape[1], q_len=q.shape[2],
                                                  kv_len=k.shape[2], head_dim=q.shape[3], dtype=_dtype(q),
                                                  causal=bool(_argument(func, args, kwargs, "is_causal", False))))
        elif "scaled_dot_product" in name or "flash_attention" in name or "efficient_attention" in name:
            pass  # an attention kernel's backward: priced with its forward (ATTENTION_BWD_FACTOR)
        elif fresh:  # views move no bytes
            self.layer.mem_bytes += sum(t.numel() * t.element_size() for t in ins + outs)
        if func in SELECTIVE_SAVE_OPS:
            for t in outs:
                if storage_id(t) not in self.params:
                    self.layer.must_save.setdefault(storage_id(t), t)
        return out

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if storage_id(t) not in self.params:
            self.layer.saved.setdefault(storage_id(t), t)
        return t


def _gemm(func, args, tp: bool) -> Gemm:
    if func in (_aten.addmm.default, _aten.baddbmm.default):
        args = args[1:]
    a, b = args[0], args[1]
    batch = a.shape[0] if a.dim() == 3 else 1
    return Gemm(m=a.shape[-2], k=a.shape[-1], n=b.shape[-1], batch=batch, dtype=_dtype(a), tp=tp)


def _conv_gemm(args, out: torch.Tensor, tp: bool) -> Gemm:
    """Convolution as its implicit GEMM: M = N·spatial out, N = C_out, K = C_in/groups · kernel."""
    x, w = args[0], args[1]
    return Gemm(m=out.numel() // out.shape[1], n=w.shape[0], k=math.prod(w.shape[1:]), dtype=_dtype(x), tp=tp)


def fakeify(module: nn.Module, mode: FakeTensorMode, dtype: torch.dtype) -> None:
    """Swap meta parameters and buffers for fake CPU tensors, keeping tied parameters tied."""
    memo: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            dt = dtype if t.is_floating_point() else t.dtype
            with mode:
                new = torch.empty(t.shape, dtype=dt, device="cpu")
            memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
        return memo[id(t)]

    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = fake(p)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = fake(b)


def first_tensor(x: Any) -> torch.Tensor | None:
    return next((t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)), None)


def tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def shape_tag(t: torch.Tensor, tokens: int) -> str:
    """`sp` for a tensor with one row per token (any view of it), else `replicated`."""
    return "sp" if tokens > 1 and t.numel() % tokens == 0 else "replicated"


def saved_records(store: dict[int, torch.Tensor], producer: dict[int, str], inputs: set[int], tokens: int,
             tags: list[str] | None = None) -> tuple[SavedTensor, ...]:
    out = []
    for i, (sid, t) in enumerate(store.items()):
        nbytes = t.untyped_storage().nbytes()
        shared = sid in inputs and i > 0  # a block input besides the hidden state (e.g. rotary tables)
        tag = "replicated" if shared else tags[i] if tags else shape_tag(t, tokens)
        op = "input" if sid in inputs else producer.get(sid, "?")
        out.append(SavedTensor(nbytes=nbytes, shard=tag, op=op, shape=tuple(t.shape), dtype=_dtype(t)))
    return tuple(out)
