"""Ops that a GPU build of torch runs as one fused kernel where this CPU build decomposes them:
RMSNorm and dropout.

The profile describes the program as it runs on the GPUs it plans for. `F.rms_norm` (and so
`nn.RMSNorm`) is the case that matters: torch's `rms_norm` calls `aten::_fused_rms_norm`, which has a
CUDA kernel (one read of the input, one write of the output and of the per-row `rstd`; autograd saves
the input and `rstd`, derivatives.yaml) but no CPU kernel, so on CPU fake tensors it decomposes into
an fp32 upcast, pow, mean, rsqrt and two multiplies, and autograd saves two fp32 copies of the hidden
state. For Llama 2 13B at 4K tokens that is 0.17 GB of activations per sample and block that the GPU
never holds (measured with `planner.profile`: 1.08 -> 0.83 GB per sample and block). torch keeps the
composite where the weight's dtype differs from the input's, and so does `FusedOnCuda`. Dropout in
training is `native_dropout` on a GPU (one pass, a bool mask) and three ops with a mask in the
activation dtype on CPU; `FusedOnCuda` calls `native_dropout`, which this build also has.

Inside `FusedOnCuda`, `F.rms_norm` becomes `planner::fused_rms_norm`, a custom op that the recorder
sees as one op (its inputs and outputs are the kernel's memory traffic) and whose backward saves
what the CUDA op's backward saves. The op computes the same values as torch's composite, so a real
(non-fake) call stays correct.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.distributed.tensor import Partial, Replicate, Shard
from torch.distributed.tensor.experimental import register_sharding
from torch.overrides import TorchFunctionMode

__all__ = ["FusedOnCuda", "as_on_gpu"]

_NS = __name__.split(".")[0]
"""The op namespace: `planner` for the profiler, `planner_runtime` in an emitted program (its copy of
this package), so both can live in one process without registering one op twice."""


def _dims(x: torch.Tensor, shape: Sequence[int]) -> list[int]:
    return list(range(x.dim() - len(shape), x.dim()))


def _up(t: torch.Tensor) -> torch.Tensor:
    """The op's math type: fp32 for half types, as torch's kernel and composite compute."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


@torch.library.custom_op(f"{_NS}::fused_rms_norm", mutates_args=())
def _fused(x: torch.Tensor, shape: list[int], weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    up = _up(x)
    rstd = torch.rsqrt(up.pow(2).mean(_dims(x, shape), keepdim=True) + eps)
    return (up * rstd * _up(weight)).to(x.dtype), rstd


@_fused.register_fake
def _(x, shape, weight, eps):
    stat = [*x.shape[: x.dim() - len(shape)], *([1] * len(shape))]
    return torch.empty_like(x), x.new_empty(stat, dtype=torch.promote_types(x.dtype, torch.float32))


@torch.library.custom_op(f"{_NS}::fused_rms_norm_backward", mutates_args=())
def _fused_bwd(grad: torch.Tensor, x: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
               shape: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    dims = _dims(x, shape)
    xhat = _up(x) * rstd
    g = _up(grad) * _up(weight)
    dx = rstd * (g - xhat * (g * xhat).mean(dims, keepdim=True))
    dw = (_up(grad) * xhat).sum(list(range(x.dim() - len(shape))))
    return dx.to(x.dtype), dw.to(weight.dtype)


@_fused_bwd.register_fake
def _(grad, x, rstd, weight, shape):
    return torch.empty_like(x), torch.empty_like(weight)


def _setup(ctx, inputs, output):
    x, shape, weight, _ = inputs
    ctx.set_materialize_grads(False)  # rstd gets no gradient: no zeros to write
    ctx.save_for_backward(x, output[1], weight)
    ctx.shape = shape


def _backward(ctx, grad, _grad_rstd):
    if grad is None:  # the output took no part in the loss
        return None, None, None, None
    x, rstd, weight = ctx.saved_tensors
    dx, dw = _fused_bwd(grad, x, rstd, weight, ctx.shape)
    return dx, None, dw, None


_fused.register_autograd(_backward, setup_context=_setup)


@register_sharding(_fused._opoverload)
def _(x, shape, weight, eps):
    """On DTensors (sequence parallel hands RMSNorm a sequence shard): all replicated, or input, output
    and rstd sharded alike on a dimension the norm does not reduce, the weight replicated."""
    out = [([Replicate(), Replicate()], [Replicate(), None, Replicate(), None])]
    for d in range(x.ndim - len(shape)):
        out.append(([Shard(d), Shard(d)], [Shard(d), None, Replicate(), None]))
    return out


@register_sharding(_fused_bwd._opoverload)
def _(grad, x, rstd, weight, shape):
    """As the forward; the weight's gradient from row shards is a partial sum."""
    out = [([Replicate(), Replicate()], [Replicate()] * 4 + [None])]
    for d in range(x.ndim - len(shape)):
        out.append(([Shard(d), Partial()], [Shard(d), Shard(d), Shard(d), Replicate(), None]))
    return out


def _arguments(args: tuple, kwargs: dict, names: tuple[str, ...]) -> dict:
    """A functional's arguments by name, however they were passed."""
    return {**dict(zip(names, args)), **kwargs}


def _dropout(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """`F.dropout` as torch runs it on a GPU in training (`at::dropout` takes `native_dropout` for CUDA
    inputs with 0 < p < 1): one kernel, a 1-byte mask kept for backward. On CPU it decomposes into a
    mask of the input's dtype (bernoulli_, div_) and a multiply. None: leave the call as it is."""
    a = _arguments(args, kwargs, ("input", "p", "training", "inplace"))
    p, training, x = a.get("p", 0.5), a.get("training", True), a["input"]
    if a.get("inplace", False) or not training or not 0 < p < 1 or x.numel() == 0:
        return None
    return torch.native_dropout(x, p, True)[0]


def _rms_norm(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """`F.rms_norm` as torch runs it on a GPU (`_fused_rms_norm`), except where torch keeps the
    composite: no weight, a weight of another dtype, complex input. None: leave the call as it is."""
    a = _arguments(args, kwargs, ("input", "normalized_shape", "weight", "eps"))
    x, weight, eps = a["input"], a.get("weight"), a.get("eps")
    if weight is None or weight.dtype != x.dtype or x.is_complex():
        return None
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    return _fused(x, list(a["normalized_shape"]), weight, float(eps))[0]


_ROUTES = {F.dropout: _dropout, F.rms_norm: _rms_norm}


class FusedOnCuda(TorchFunctionMode):
    """Routes `F.rms_norm` with a weight of the input's dtype to the fused op, and `F.dropout` in
    training to `native_dropout` (see the module doc, `_rms_norm` and `_dropout`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        route = _ROUTES.get(func)
        out = route(args, kwargs) if route is not None else None
        return func(*args, **kwargs) if out is None else out


def as_on_gpu(device: torch.device):
    """The context a training step runs in: on a CPU, `FusedOnCuda`, so that the program keeps what the
    plan (made for GPUs, from a profile taken the same way) predicts; on a GPU torch fuses by itself."""
    return FusedOnCuda() if device.type == "cpu" else contextlib.nullcontext()
