"""What a profile depends on in the model the file builds: the key of the profile cache.

The file's bytes alone are not enough: a model file that takes its depth from an environment variable,
a config file or an imported module builds different models from the same bytes. The fingerprint is
read off the model actually built (on the meta device) and the batch it is fed: the module tree with
each module's repr, every parameter and buffer's name, shape and dtype, the source of every module class
in the tree (a forward edited in an imported module changes it), the batch's structure, shapes and
dtypes, and the file's TP_PLAN and whether it defines its own loss.
"""
from __future__ import annotations

import hashlib
import inspect

import torch.nn as nn

from planner.load.model_file import ModelSource, sample_batch
from planner.program.runtime.policy import batch_leaves

__all__ = ["model_fingerprint"]


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # built-in or generated classes: their name is what is known
        return f"{cls.__module__}.{cls.__qualname__}"


def _batch_shape(x) -> str:
    if isinstance(x, dict):
        return "{" + ",".join(f"{k}:{_batch_shape(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (tuple, list)):
        return "(" + ",".join(_batch_shape(v) for v in x) + ")"
    leaves = batch_leaves(x)
    return f"{tuple(leaves[0].shape)}:{leaves[0].dtype}" if leaves else repr(x)


def model_fingerprint(source: ModelSource, model: nn.Module, micro_batch: int) -> str:
    """A hex digest of the built `model` and its batch at `micro_batch` (see the module doc)."""
    h = hashlib.sha256()
    classes: dict[type, None] = {}
    for name, mod in model.named_modules():
        classes.setdefault(type(mod))
        h.update(f"{name}|{type(mod).__module__}.{type(mod).__qualname__}|{mod.extra_repr()}\n".encode())
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
    for cls in classes:
        h.update(_class_source(cls).encode())
    inputs, targets = sample_batch(source, micro_batch, model)
    h.update(f"{_batch_shape(inputs)}|{_batch_shape(targets)}|{sorted((source.tp_plan or {}).items())}|"
             f"{source.has_loss}".encode())
    return h.hexdigest()
