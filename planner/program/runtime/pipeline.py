"""Pipeline split: a chunk is the user's model with the modules another stage owns replaced by stand-ins,
so the user's own forward runs unchanged on every stage, whatever the module tree looks like (blocks in
`blocks`, `transformer.h`, `model.layers` or an `nn.Sequential` called as a whole).

How a chunk runs one micro-batch: its forward is the user's forward on that micro-batch's real inputs
(every rank builds the whole batch, so keyword inputs, masks and labels reach every stage); modules of
earlier stages give zeros of their output's shape; a hook feeds the activation received from the previous
stage into the chunk's first block; after its last block, a chunk before the last stops the forward and
hands on that block's output. Modules without parameters (rotary tables, dropout, pooling) run on every
stage, so tensors computed outside the blocks and passed into each of them are real everywhere.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from .policy import batch_map, model_call, with_main_input

__all__ = ["split_chunk", "attach_chunk_hooks", "set_micro_batches", "watch_inference", "build_meta_parameters"]


class _Absent(nn.Module):
    """Stands in for a module another pipeline stage owns: runs the original on meta tensors for the
    output's shapes and returns zeros of them (on the device of the real inputs), holding no parameters."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self._meta = [original.to("meta")]  # a list, so it is not registered as a submodule

    def forward(self, *args, **kwargs):
        real = [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor) and not t.is_meta]
        to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
        out = self._meta[0](*[to_meta(a) for a in args], **{k: to_meta(v) for k, v in kwargs.items()})
        if not real:
            return out
        return batch_map(lambda t: torch.zeros(t.shape, dtype=t.dtype, device=real[0].device), out)


class _Blocks(nn.ModuleDict):
    """The blocks a chunk owns, keyed by their original index (so parameter names stay `blocks.7.*`),
    iterated, indexed, sliced and called (as the `nn.Sequential` it may replace) like the original."""

    def __init__(self, modules: dict[str, nn.Module], names: list[str]):
        super().__init__(modules)
        self._names = names  # every block's name in the original container, in order

    def __iter__(self):
        return iter(self.values())

    def __getitem__(self, key):
        if isinstance(key, slice):
            keep = set(self._names[key])
            return _Blocks({k: m for k, m in self.items() if k in keep}, self._names)
        if isinstance(key, int):
            key = self._names[key]
        return super().__getitem__(key)

    def position(self, key: str) -> int:
        """Index of block `key` in the whole model's block list."""
        return self._names.index(key)

    def forward(self, x, *args, **kwargs):
        for block in self.values():
            x = block(x, *args, **kwargs)
        return x


class _Stop(Exception):
    """Raised after a chunk's last block to end the user's forward early, carrying that block's output."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def _chunk_forward(self, *args, **kwargs):
    """Forward of a pipeline chunk: the first chunk is handed micro-batch indices, a later one the previous
    chunk's output; each runs the user's forward on its next micro-batch's inputs (torch's metadata
    inference, before the first step, runs the first micro-batch without consuming it). A chunk before
    the last returns its last block's output; the last returns the micro-batch's loss (so what leaves a
    stage is always a tensor, whatever the model returns)."""
    state = self._pipeline
    received = args[0] if args else None
    index = 0 if state["inferring"] else state["next"]
    if not state["inferring"]:
        state["next"] += 1
        if state["first"] and isinstance(received, torch.Tensor) and int(received.reshape(-1)[0]) != index:
            raise RuntimeError(f"pipeline chunk got micro-batch {int(received.reshape(-1)[0])}, expected {index}")
    mb_args, mb_kwargs, targets = state["micro"][index]
    if not state["first"]:
        state["incoming"] = received
    try:
        out = state["forward"](self, *mb_args, **mb_kwargs)
    except _Stop as stop:
        out = stop.output
    finally:
        state["incoming"] = None
    return state["loss"](out, targets).reshape(1) if state["last"] else out  # (1,): torch merges outputs by cat


def split_chunk(model: nn.Module, owned: list[str], *, blocks: str, units: list[str], first: bool,
                last: bool) -> nn.Module:
    """A deep copy of (meta) `model` holding only the modules named in `owned` (e.g. `["wte", "wpe",
    "drop", "blocks.0"]`) among `units` (every stage's modules outside the blocks); modules of other
    stages that hold parameters become stand-ins. Parameter names are those of the whole model. Tied
    weights stay tied inside the chunk."""
    part = copy.deepcopy(model)
    prefix = f"{blocks}."
    mine = [n[len(prefix):] for n in owned if blocks and n.startswith(prefix)]
    if blocks:
        children = dict(part.get_submodule(blocks).named_children())
        _set(part, blocks, _Blocks({k: children[k] for k in mine}, list(children)))
    for name in units:
        if name in owned:
            continue
        parent, _, leaf = name.rpartition(".")
        holder = part.get_submodule(parent) if parent else part
        if leaf in holder._parameters:  # a parameter held outside any module of its own (a class token)
            zeros = torch.zeros(holder._parameters.pop(leaf).shape)  # real, so it moves with its values
            holder.register_buffer(leaf, zeros, persistent=False)
            continue
        module = part.get_submodule(name)
        if any(True for _ in module.parameters()):
            _set(part, name, _Absent(module))
    if first and last:
        return part
    enter = (blocks, mine[0]) if mine and not first else (owned[0], None)
    leave = (blocks, mine[-1]) if mine and not last else (owned[-1], None)
    part._pipeline = {"first": first, "last": last, "micro": [], "next": 0, "incoming": None, "inferring": False,
                      "loss": None,
                      "forward": type(part).forward, "enter": enter, "leave": leave}
    part.__class__ = type(f"Chunk{type(part).__name__}", (type(part),), {"forward": _chunk_forward})
    return part


def set_micro_batches(part: nn.Module, micro: list[tuple[Any, Any]], loss_fn, pass_targets: bool,
                      fixed: dict[str, Any]) -> None:
    """The step's micro-batches `[(inputs, targets), ...]` (on the device) for a chunk's forwards, with the
    `fixed` training keywords, and the loss the last chunk computes from its outputs and targets."""
    state = getattr(part, "_pipeline", None)
    if state is None:
        return
    calls = [(*model_call(inputs, targets, pass_targets, fixed), targets) for inputs, targets in micro]
    state["micro"], state["next"], state["loss"] = calls, 0, loss_fn


def watch_inference(stage, part: nn.Module) -> None:
    """Mark the forward calls torch's `PipelineStage` makes to infer shapes before the first step (they
    must not consume a micro-batch). The method is private and was renamed across torch releases:
    every known name is wrapped."""
    state = part._pipeline
    for name in ("_forward_metadata_inference", "_shape_inference"):
        method = getattr(stage, name, None)
        if method is None:
            continue

        def inferring(*args, _method=method, **kwargs):
            state["inferring"] = True
            try:
                return _method(*args, **kwargs)
            finally:
                state["inferring"] = False
        setattr(stage, name, inferring)


def attach_chunk_hooks(part: nn.Module) -> None:
    """Hooks that feed the incoming activation to the chunk's first block and stop after its last one.
    Attached to the outermost wrappers (after checkpointing and FSDP), so a recomputation in backward
    never sees them, and first on entry so FSDP's own input handling sees the real input."""
    state = getattr(part, "_pipeline", None)
    if state is None:
        return

    def resolve(where):
        name, key = where
        return part.get_submodule(name)[key] if key is not None else part.get_submodule(name)
    if not state["first"]:
        def enter(module, args, kwargs):
            return with_main_input(args, kwargs, lambda _: state["incoming"])
        resolve(state["enter"]).register_forward_pre_hook(enter, with_kwargs=True, prepend=True)
    if not state["last"]:
        def leave(module, args, output):  # contiguous: gloo and NCCL send only dense tensors
            raise _Stop(batch_map(lambda t: t.contiguous(), output))
        resolve(state["leave"]).register_forward_hook(leave)


class build_meta_parameters:
    """Context for building the model: parameters go to the meta device as they are registered, while
    buffers are computed for real where the factory puts them (rotary tables, causal masks: values a
    meta build would lose and no state dict restores when they are not persistent)."""

    def __enter__(self):
        self._register = nn.Module.register_parameter
        register = self._register

        def to_meta(module, name, param):
            if param is not None and not param.is_meta:
                param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
            register(module, name, param)
        nn.Module.register_parameter = to_meta
        return self

    def __exit__(self, *exc):
        nn.Module.register_parameter = self._register
        return False


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
