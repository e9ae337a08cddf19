"""What the planner and the program must agree on: the "selective" recomputation policy (the
profiler measures saved tensors with it), the default loss and the LR schedule. Torch only, no
torch.distributed: the planner's loader and profiler import it."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["SELECTIVE_SAVE_OPS", "selective_policy", "selective_context", "default_loss", "cosine_lr"]

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


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the last dimension (token logits or class logits)."""
    return F.cross_entropy(outputs.flatten(0, -2).float(), targets.flatten())


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total` (step is
    1-based: the LR of the step-th optimizer step)."""
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
