"""Load a model file (`path.py[:factory]`) into a `ModelSource` without running the model.

The file is ordinary Python that defines `model()` (or another factory named after the colon),
`batch(batch_size)` and optionally `loss`, `init_weights`, `dataset` and `TP_PLAN`. `batch` may take the
built model as a second argument so one file can serve factories of different sequence lengths. Every
failure is a `PlannerError` with one line that says what to change.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
import torch.nn as nn

from planner.errors import PlannerError
from planner.program.runtime.policy import batch_leaves, default_loss  # shared with the emitted program

__all__ = ["ModelSource", "load", "build_meta", "sample_batch", "default_loss", "split_ref"]


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A loaded model file: how to build the model, make a batch and compute the loss."""

    ref: str
    """What the user wrote, normalised to `path:factory`."""
    path: Path
    """Absolute path of the model file."""
    factory: str
    """Name of the function that builds the model."""
    file_sha256: str
    """Hash of the file's bytes: the profile cache key."""
    module: ModuleType = field(repr=False)
    """The imported file."""
    tp_plan: dict[str, str] | None = None
    """The file's `TP_PLAN`, if it declares one."""

    @property
    def build(self) -> Callable[[], nn.Module]:
        return getattr(self.module, self.factory)

    @property
    def loss(self) -> Callable[[Any, Any], torch.Tensor]:
        return getattr(self.module, "loss", default_loss)

    @property
    def has_loss(self) -> bool:
        """Whether the file defines its own `loss(outputs, targets)`."""
        return callable(getattr(self.module, "loss", None))


def split_ref(ref: str) -> tuple[Path, str]:
    """`"a/b.py:tiny"` -> (Path("a/b.py"), "tiny"); the factory defaults to `model`."""
    path, sep, factory = ref.rpartition(":")
    if not sep or not path or "/" in factory or factory.endswith(".py"):
        path, factory = ref, "model"
    return Path(path), factory or "model"


def _import(path: Path) -> ModuleType:
    name = f"planner_model_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PlannerError(f"{path}: not a Python file; give a .py file that defines model() and batch()")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        del sys.modules[name]
        raise PlannerError(f"{path}:{e.lineno}: syntax error: {e.msg}; fix the model file") from None
    except Exception as e:  # the user's code raised while importing
        del sys.modules[name]
        raise PlannerError(f"{path}{_where(e, path)}: importing the model file raised "
                           f"{type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


def _where(e: BaseException, path: Path) -> str:
    """`:LINE` of the deepest frame inside the user's file, for one-line messages."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    return f":{lines[-1]}" if lines else ""


def load(ref: str) -> ModelSource:
    """Import a model file and check that it follows the model-file contract."""
    path, factory = split_ref(ref)
    if not path.exists():
        raise PlannerError(f"{path}: no such model file; give the path of a .py file that defines model()")
    if path.is_dir():
        raise PlannerError(f"{path}: is a directory; give the path of a .py file that defines model()")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PlannerError(f"{path}: cannot read the model file ({e.strerror})") from None
    path = path.resolve()
    module = _import(path)
    fn = getattr(module, factory, None)
    if not callable(fn):
        found = sorted(n for n, v in vars(module).items() if inspect.isfunction(v)
                       and v.__module__ == module.__name__ and not n.startswith("_") and n not in ("batch", "loss"))
        hint = f" (functions in the file: {', '.join(found)})" if found else ""
        raise PlannerError(f"{path}: defines no factory '{factory}()'; define it or name one with "
                           f"{path.name}:FACTORY{hint}")
    if not callable(getattr(module, "batch", None)):
        raise PlannerError(f"{path}: defines no batch(batch_size) returning (inputs, targets); add one")
    tp_plan = getattr(module, "TP_PLAN", None)
    if tp_plan is not None and not (isinstance(tp_plan, dict) and all(
            isinstance(k, str) and v in ("colwise", "rowwise") for k, v in tp_plan.items())):
        raise PlannerError(f"{path}: TP_PLAN must map module patterns to 'colwise' or 'rowwise'")
    return ModelSource(ref=f"{path}:{factory}", path=path, factory=factory,
                       file_sha256=hashlib.sha256(data).hexdigest(), module=module, tp_plan=tp_plan)


def build_meta(source: ModelSource) -> nn.Module:
    """Call the factory under the meta device: shapes and counts without allocating weights."""
    try:
        with torch.device("meta"):
            model = source.build()
    except Exception as e:
        raise PlannerError(f"{source.path}{_where(e, source.path)}: {source.factory}() raised "
                           f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise PlannerError(f"{source.path}: {source.factory}() returned {type(model).__name__}, "
                           "not a torch.nn.Module; return the model")
    return model


def sample_batch(source: ModelSource, batch_size: int, model: nn.Module | None = None) -> tuple[Any, Any]:
    """Call the file's `batch(batch_size[, model])` and check it returns (inputs, targets): inputs a
    tensor, a tuple of tensors or a dict of them (keyword arguments); targets a tensor or None."""
    fn = source.module.batch
    takes_model = len(inspect.signature(fn).parameters) >= 2
    try:
        out = fn(batch_size, model) if takes_model else fn(batch_size)
    except Exception as e:
        raise PlannerError(f"{source.path}{_where(e, source.path)}: batch({batch_size}) raised "
                           f"{type(e).__name__}: {e}") from None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise PlannerError(f"{source.path}: batch({batch_size}) must return a pair (inputs, targets), got "
                           f"{type(out).__name__}")
    inputs, targets = out
    shape_ok = isinstance(inputs, torch.Tensor) or (
        isinstance(inputs, (tuple, list, Mapping)) and batch_leaves(inputs)
        and all(isinstance(v, torch.Tensor) or v is None
                for v in (inputs.values() if isinstance(inputs, Mapping) else inputs)))
    if not shape_ok:
        raise PlannerError(f"{source.path}: batch({batch_size}) must return inputs as a tensor, a tuple of tensors "
                           f"or a dict of tensors (keyword arguments), got {type(inputs).__name__}")
    if targets is not None and not isinstance(targets, torch.Tensor):
        raise PlannerError(f"{source.path}: batch({batch_size}) must return targets as a tensor or None (when the "
                           f"model computes its own loss), got {type(targets).__name__}")
    for t in batch_leaves((inputs, targets)):
        if t.dim() == 0 or t.shape[0] != batch_size:
            raise PlannerError(f"{source.path}: batch({batch_size}) returned a tensor of shape {tuple(t.shape)}; "
                               "the first dimension of every input and target must be the batch size")
    return inputs, targets
