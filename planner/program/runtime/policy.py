"""What the planner and the program must agree on: the "selective" recomputation policy (the
profiler measures saved tensors with it), how a batch is fed to the model and its loss taken, and the LR
schedule. Torch only, no torch.distributed: the planner's loader and profiler import it.

Batches as model files write them: `batch(n)` returns `(inputs, targets)`; `inputs` is one tensor
(`model(x)`), a tuple of tensors (`model(*x)`) or a dict (`model(**x)`, Hugging Face style, which may hold
`labels`); `targets` is a tensor, or None when the model computes its own loss from the inputs. A model
whose forward takes `targets` (nanoGPT's `forward(idx, targets=None)`) gets them when the file defines
no `loss()`. Outputs: a tensor of logits; a Hugging Face `ModelOutput` (its `loss` when the model
computed one, else its `logits`); a tuple (a 0-dim tensor in it is the loss, as nanoGPT's
`(logits, loss)`; else the first element is the logits).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

__all__ = ["SELECTIVE_SAVE_OPS", "selective_policy", "selective_context", "default_loss", "model_loss", "cosine_lr",
           "call_args", "takes_targets", "training_kwargs", "model_call", "forward_loss", "with_main_input", "batch_map", "batch_leaves", "batch_size_of", "token_count", "collate"]

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


def model_loss(outputs: Any) -> torch.Tensor | None:
    """The loss the model computed itself: `outputs.loss` (Hugging Face), a 0-dim tensor in a tuple
    (nanoGPT's `(logits, loss)`), else None."""
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
        return loss if isinstance(loss, torch.Tensor) else None
    if isinstance(outputs, (tuple, list)):
        return next((t for t in outputs if isinstance(t, torch.Tensor) and t.dim() == 0), None)
    return None


def _logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        if isinstance(outputs.get("logits"), torch.Tensor):
            return outputs["logits"]
        found = [v for v in outputs.values() if isinstance(v, torch.Tensor)]
    else:
        found = [v for v in outputs if isinstance(v, torch.Tensor)] if isinstance(outputs, (tuple, list)) else []
    if not found:
        raise TypeError(f"the model returned {type(outputs).__name__} with no tensor in it; return logits or "
                        "define loss(outputs, targets) in the model file")
    return found[0]


def default_loss(outputs: Any, targets: torch.Tensor | None) -> torch.Tensor:
    """The model's own loss when it computed one, else cross-entropy of its logits over the last
    dimension (token or class logits)."""
    loss = model_loss(outputs)
    if loss is not None:
        return loss
    if targets is None:
        raise TypeError("the model computed no loss and batch() gave no targets; return (inputs, targets) "
                        "or define loss(outputs, targets) in the model file")
    logits = _logits(outputs)
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten())


def call_args(inputs: Any) -> tuple[tuple, dict]:
    """(args, kwargs) of the model call for one batch's inputs."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def takes_targets(model: torch.nn.Module, has_loss: bool) -> bool:
    """Whether the targets go into the model's forward: it has a `targets` parameter (nanoGPT) and the
    file defines no `loss()` of its own."""
    if has_loss:
        return False
    try:
        return "targets" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def training_kwargs(model: torch.nn.Module) -> dict[str, Any]:
    """Keywords every training call passes unless the batch sets them: `use_cache=False` for a model whose
    forward takes `use_cache` (Hugging Face's default keeps a key/value cache, which a training step does
    not use and which recomputation and the profiler's second pass over a block would append to)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def model_call(inputs: Any, targets: Any, pass_targets: bool, fixed: dict[str, Any]) -> tuple[tuple, dict]:
    """(args, kwargs) of one training call: the batch's inputs, the `fixed` keywords (`training_kwargs`)
    unless the batch sets them, and the targets when the forward takes them (`takes_targets`)."""
    args, kwargs = call_args(inputs)
    kwargs = {**fixed, **kwargs}
    if pass_targets and targets is not None and "targets" not in kwargs:
        kwargs["targets"] = targets
    return args, kwargs


def forward_loss(model: Callable, inputs: Any, targets: Any, loss_fn: Callable, pass_targets: bool,
                 fixed: dict[str, Any]) -> torch.Tensor:
    """`loss_fn(model(inputs), targets)` with the batch conventions above."""
    args, kwargs = model_call(inputs, targets, pass_targets, fixed)
    return loss_fn(model(*args, **kwargs), targets)


def with_main_input(args: tuple, kwargs: dict, fn: Callable[[Any], Any]) -> tuple[tuple, dict]:
    """(args, kwargs) of a module call with its main input replaced by `fn(it)`: the first positional
    argument, else the `hidden_states` keyword (Hugging Face calls `self_attn(hidden_states=...)`), else
    the first tensor keyword."""
    if args:
        return (fn(args[0]), *args[1:]), kwargs
    key = "hidden_states" if "hidden_states" in kwargs else next(
        k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return args, {**kwargs, key: fn(kwargs[key])}


def batch_leaves(x: Any) -> list[torch.Tensor]:
    """The tensors of inputs or targets (a tensor, tuple/list or dict of tensors; None has none)."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):
        return [t for v in x.values() for t in batch_leaves(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in batch_leaves(v)]
    return []


def batch_map(fn: Callable[[torch.Tensor], torch.Tensor], x: Any) -> Any:
    """`fn` applied to every tensor of inputs or targets, the structure kept."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, Mapping):
        return {k: batch_map(fn, v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(batch_map(fn, v) for v in x)
    return x


def collate(samples: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """A batch from dataset samples `(inputs, target)`: tensors (or numbers) stacked, dicts and tuples
    stacked field by field (a Hugging Face style `{"input_ids": ..., "labels": ...}` sample), None kept."""
    def stack(values: list[Any]) -> Any:
        first = values[0]
        if first is None:
            return None
        if isinstance(first, Mapping):
            return {k: stack([v[k] for v in values]) for k in first}
        if isinstance(first, (tuple, list)):
            return type(first)(stack([v[i] for v in values]) for i in range(len(first)))
        return torch.stack([torch.as_tensor(v) for v in values])
    return stack([x for x, _ in samples]), stack([y for _, y in samples])


def batch_size_of(inputs: Any) -> int:
    leaves = batch_leaves(inputs)
    return leaves[0].shape[0] if leaves and leaves[0].dim() else 0


def token_count(inputs: Any) -> int:
    """Tokens in a batch: the elements of its first integer tensor of two or more dimensions (token
    ids), else the number of samples."""
    ids = next((t for t in batch_leaves(inputs) if not t.is_floating_point() and t.dim() >= 2), None)
    return ids.numel() if ids is not None else batch_size_of(inputs)


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to `lr` over `warmup` steps, then cosine decay to `min_lr` at `total` (step is
    1-based: the LR of the step-th optimizer step)."""
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))
