"""Parallelisation helpers for the emitted training program; depends on torch only.

This module is copied verbatim next to the emitted `train.py`, so it must never import `planner`.
It is also the single definition of the "selective" recomputation policy, which the profiler and the
cost model import from here so that all three agree on which activations are kept.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["SELECTIVE_SAVE_OPS", "selective_policy", "selective_context"]

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
