"""Bytes of training state (weights, gradients, optimizer) one rank holds, as torch really lays it out.

Mixed precision as the emitted program runs it: fp32 master weights, fp32 gradients and AdamW's two
fp32 moments (exp_avg, exp_avg_sq); compute in the plan's dtype. AdamW's `step` counters are scalar
CPU tensors (torch keeps them off the device unless `capturable`/`fused`), so they are not counted.

- ZeRO 0 (DDP, `gradient_as_bucket_view=True`, so gradients live in the buckets, no second copy):
  4 + 4 + 8 bytes per local parameter, plus a `dtype` copy of every weight when compute is 16-bit
  (autocast's cast cache lives for the whole step, which wraps every micro-batch).
- ZeRO 2/3 (FSDP2 `fully_shard`, `MixedPrecisionPolicy(param_dtype, reduce_dtype=fp32)`): FSDP2 shards
  dim 0 of each (TP-local) tensor into ceil(rows / shard) rows per rank (it pads), so master weights,
  gradients and moments are 16 bytes per *padded* shard element. When gradients accumulate over several
  micro-batches (pp > 1, or more than one micro-batch) torch keeps them unsharded until the last
  backward (`set_requires_gradient_sync(False)`, `set_reshard_after_backward(False)`, as
  `torch.distributed.pipelining.stage` does), so the rank also holds the unsharded `dtype` weights and
  fp32 gradients of all its layers for the step. ZeRO 2 always keeps the unsharded weights from forward
  to backward; ZeRO 3 with one micro-batch and no pipeline holds only a layer or two at a time (counted
  under buffers by the cost model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

from planner.types.profile import LayerProfile, ParamTensor

__all__ = ["StateBytes", "local_numel", "state_bytes", "state_bytes_by_layer", "held_after_step", "DTYPE_BYTES", "fsdp_buffer",
           "widest_by_layer"]

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MASTER = 4
"""fp32 master weights, gradients and each Adam moment."""


@dataclass(frozen=True, slots=True)
class StateBytes:
    weights: int = 0
    grads: int = 0
    optimizer: int = 0

    def __add__(self, o: "StateBytes") -> "StateBytes":
        return StateBytes(self.weights + o.weights, self.grads + o.grads, self.optimizer + o.optimizer)

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer


def local_numel(t: ParamTensor, tp: int, shard: int = 1) -> int:
    """Elements of `t` on one rank: TP splits `tp_dim`; FSDP then gives each rank ceil(rows / shard) rows
    of dim 0 (padding the last)."""
    shape = list(t.shape) or [1]
    if t.tp_dim >= 0 and tp > 1:
        shape[t.tp_dim] //= tp
    if shard > 1:
        shape[0] = math.ceil(shape[0] / shard)
    return math.prod(shape)


def state_bytes(layers: Iterable[LayerProfile], tied: tuple[tuple[str, ...], ...], *, tp: int, zero: int,
                dp_shard: int, dtype: str, accumulating: bool) -> StateBytes:
    """Weights, gradients and optimizer bytes one rank holds for `layers` (tied tensors once)."""
    return _tensor_state(_unique_tensors(layers, tied), tp=tp, zero=zero, dp_shard=dp_shard, dtype=dtype,
                         accumulating=accumulating)


def state_bytes_by_layer(layers: Iterable[LayerProfile], tied: tuple[tuple[str, ...], ...], *, tp: int, zero: int,
                         dp_shard: int, dtype: str, accumulating: bool) -> list[StateBytes]:
    """`state_bytes` of each layer, a tied group counted once, in the first layer that holds it: they sum
    to `state_bytes` of all the layers (one rank holding the whole model)."""
    seen: set[str] = set()
    memo: dict[tuple, StateBytes] = {}  # identical blocks: one sum per distinct list of (shape, tp_dim)
    out = []
    for layer in layers:
        tensors = tuple(_unique_tensors([layer], tied, seen))
        key = tuple((t.shape, t.tp_dim) for t in tensors)
        if key not in memo:
            memo[key] = _tensor_state(tensors, tp=tp, zero=zero, dp_shard=dp_shard, dtype=dtype, accumulating=accumulating)
        out.append(memo[key])
    return out


def _tensor_state(tensors: Iterable[ParamTensor], *, tp: int, zero: int, dp_shard: int, dtype: str,
                  accumulating: bool) -> StateBytes:
    compute = DTYPE_BYTES.get(dtype, 4)
    total = StateBytes()
    for t in tensors:
        full = local_numel(t, tp)
        if zero == 0:
            copy = compute * full if compute < MASTER else 0
            total += StateBytes(MASTER * full + copy, MASTER * full, 2 * MASTER * full)
            continue
        shard = local_numel(t, tp, dp_shard)
        keep_params = zero == 2 or accumulating
        total += StateBytes(MASTER * shard + (min(compute, MASTER) * full if keep_params else 0),
                            MASTER * shard + (MASTER * full if accumulating else 0),
                            2 * MASTER * shard)
    return total


def held_after_step(layers: Iterable[LayerProfile], tied: tuple[tuple[str, ...], ...], *, tp: int, zero: int,
                    dp_shard: int) -> StateBytes:
    """What a rank still holds between steps: fp32 master weights, gradients and two AdamW moments of
    its local (TP-split, FSDP-sharded) tensors. The unsharded copies and autocast casts of
    `state_bytes` live only inside a step. Tied tensors count once per rank that holds them."""
    total = sum(local_numel(t, tp, dp_shard if zero else 1) for t in _unique_tensors(layers, tied))
    return StateBytes(MASTER * total, MASTER * total, 2 * MASTER * total)


def _unique_tensors(layers: Iterable[LayerProfile], tied: tuple[tuple[str, ...], ...],
                    seen: set[str] | None = None) -> Iterator[ParamTensor]:
    """The parameter tensors of `layers`, a tied group's copies once (and none already in `seen`, which
    is updated)."""
    alias = {name: group[0] for group in tied for name in group}
    seen = set() if seen is None else seen
    for layer in layers:
        for t in layer.tensors:
            key = alias.get(t.name, t.name)
            if key not in seen:
                seen.add(key)
                yield t


def fsdp_buffer(big: int, compute: int, gathers: bool) -> int:
    """FSDP2's communication memory when a layer of `big` (unsharded, TP-local) elements is the largest
    in backward: its gradients unsharded in the compute dtype as autograd writes them, their fp32 copy
    as the reduce-scatter's input (reduce_dtype fp32), and the previous layer's fp32 reduce-scatter still
    in flight (FSDP2 overlaps it with this layer's backward); with ZeRO 3, two layers' parameters
    gathered in the compute dtype (the current one and the prefetched next)."""
    return big * (compute + 4 + 4) + (2 * big * compute if gathers else 0)


def widest_by_layer(layers: Iterable[LayerProfile], tp: int) -> list[int]:
    """Per layer, its elements on one TP rank (what FSDP gathers for it at once, `fsdp_buffer`)."""
    return [sum(local_numel(t, tp) for t in layer.tensors) for layer in layers]
