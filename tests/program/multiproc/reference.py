"""A plain single-process training loop (no planner code, no emitted code) for equivalence tests:
the same model file, seed, global batch, AdamW, clipping and LR schedule as the emitted train.py."""
from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"ref_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def initial_state(path: Path, factory: str, seed: int = 1234) -> dict[str, torch.Tensor]:
    """Weights of a freshly built model (what users would start from), as a plain state dict."""
    mf = load(path)
    torch.manual_seed(seed)
    model = getattr(mf, factory)()
    if hasattr(model, "init_weights"):
        model.init_weights()
    return {k: v.clone() for k, v in model.state_dict().items()}


def batch(mf, model, n: int, step: int, seed: int, data=None):
    if data is not None:  # the model file's real data: sample i of step s is item (s-1)*n + i, wrapping
        pairs = [data[((step - 1) * n + i) % len(data)] for i in range(n)]
        if isinstance(pairs[0][0], dict):  # a tokenized dataset's dict samples, labels inside
            return {k: torch.stack([a[k] for a, _ in pairs]) for k in pairs[0][0]}, None
        return torch.stack([a for a, _ in pairs]), torch.stack([torch.as_tensor(b) for _, b in pairs])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + step)
        return mf.batch(n, model) if len(inspect.signature(mf.batch).parameters) >= 2 else mf.batch(n)


def lr_at(step, lr, min_lr, warmup, total):
    if warmup and step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def _chunks(x, n: int) -> list:
    """n micro-batches of a tensor, a dict of tensors (keyword inputs) or None."""
    if x is None:
        return [None] * n
    if isinstance(x, dict):
        parts = {k: v.chunk(n) for k, v in x.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    return list(x.chunk(n))


def train(path: Path, factory: str, init: dict, *, steps: int, global_batch: int, lr=3e-4, min_lr=3e-5,
          warmup=0, clip=1.0, weight_decay=0.1, seed=0, start_step=0, micro_batches=1, compute=None):
    """Losses per step and the clipped gradients of the first step, by parameter name. `compute(module,
    model, inputs, targets)` gives a micro-batch's loss the way the model's community computes it
    (default: the file's loss(), else cross-entropy of the model's output)."""
    mf = load(path)
    with torch.device("meta"):
        meta = getattr(mf, factory)()
    model = getattr(mf, factory)()
    model.load_state_dict(init)
    loss_fn = getattr(mf, "loss", None) or (lambda o, t: F.cross_entropy(o.flatten(0, -2).float(), t.flatten()))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    data = None
    if hasattr(mf, "dataset"):
        data = mf.dataset(meta) if len(inspect.signature(mf.dataset).parameters) else mf.dataset()
    losses, grads = [], {}
    for step in range(start_step + 1, steps + 1):
        x, y = batch(mf, meta, global_batch, step, seed, data)
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for xm, ym in zip(_chunks(x, micro_batches), _chunks(y, micro_batches)):  # batch norm sees micro-batches
            part = (compute(mf, model, xm, ym) if compute else loss_fn(model(xm), ym)) / micro_batches
            part.backward()
            loss += part.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if step == start_step + 1:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            grads["__norm__"] = norm
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, min_lr, warmup, steps)
        opt.step()
        losses.append(float(loss))
    return losses, grads, model
