"""Pipeline split: a chunk is the user's model with the modules it does not own replaced by stand-ins
that compute on the meta device (no memory, no FLOPs), so the user's own forward still runs unchanged."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["split_chunk", "attach_chunk_hooks"]


class _Absent(nn.Module):
    """Stands in for a module another pipeline stage owns: runs the original on meta tensors so the
    shapes flowing through the user's forward stay right, and holds no parameters."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self._meta = [original.to("meta")]  # a list, so it is not registered as a submodule

    def forward(self, *args, **kwargs):
        to_meta = lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t  # noqa: E731
        return self._meta[0](*[to_meta(a) for a in args], **{k: to_meta(v) for k, v in kwargs.items()})


class _Blocks(nn.ModuleDict):
    """The blocks a chunk owns, keyed by their original index (so parameter names stay `blocks.7.*`),
    iterated in order like the `nn.ModuleList` it replaces."""

    def __iter__(self):
        return iter(self.values())

    def __getitem__(self, key):
        return super().__getitem__(str(key))


def _chunk_forward(self, *args, **kwargs):
    """Forward of a pipeline chunk: the first chunk takes the model's inputs; a later chunk takes the
    previous chunk's output and runs the user's forward on placeholder inputs of the micro-batch's
    shape, with that output fed into its first module; a chunk before the last returns what its last
    module produced."""
    state = self._pipeline
    if not state["first"]:
        state["incoming"] = args[0]
        args = tuple(torch.zeros(s, dtype=d, device=args[0].device) for s, d in state["input_specs"])
    out = state["forward"](self, *args, **kwargs)
    if state["last"]:
        return out
    captured, state["captured"], state["incoming"] = state["captured"], None, None
    return captured


def split_chunk(model: nn.Module, owned: list[str], *, blocks: str, first: bool, last: bool,
                input_specs: list[tuple[tuple[int, ...], torch.dtype]]) -> nn.Module:
    """A deep copy of (meta) `model` holding only the modules named in `owned` (e.g. `["wte", "wpe",
    "drop", "blocks.0"]`), whose forward maps the previous chunk's output to this chunk's output.
    Parameter names are those of the whole model. Tied weights stay tied inside the chunk."""
    part = copy.deepcopy(model)
    prefix = f"{blocks}."
    mine = [n[len(prefix):] for n in owned if blocks and n.startswith(prefix)]
    if blocks:
        container = part.get_submodule(blocks)
        _set(part, blocks, _Blocks({k: container[int(k)] for k in mine}))
    for name, _ in list(model.named_children()):
        if name != blocks and name not in owned:
            _set(part, name, _Absent(part.get_submodule(name)))
    if first and last:
        return part
    enter = (blocks, mine[0]) if mine and not first else (owned[0], None)
    leave = (blocks, mine[-1]) if mine and not last else (owned[-1], None)
    part._pipeline = {"first": first, "last": last, "input_specs": input_specs, "incoming": None,
                      "captured": None, "forward": type(part).forward, "enter": enter, "leave": leave}
    part.__class__ = type(f"Chunk{type(part).__name__}", (type(part),), {"forward": _chunk_forward})
    return part


def attach_chunk_hooks(part: nn.Module) -> None:
    """Hooks that feed the incoming activation to the chunk's first module and catch its last module's
    output. Attached to the outermost wrappers (after checkpointing and FSDP), so a recomputation in
    backward never sees them, and first on entry so FSDP's own input handling sees the real input."""
    state = getattr(part, "_pipeline", None)
    if state is None:
        return

    def resolve(where):
        name, key = where
        return part.get_submodule(name)[key] if key is not None else part.get_submodule(name)
    if not state["first"]:
        def enter(module, args, kwargs):
            return (state["incoming"], *args[1:]), kwargs
        resolve(state["enter"]).register_forward_pre_hook(enter, with_kwargs=True, prepend=True)
    if not state["last"]:
        def leave(module, args, output):
            state["captured"] = output
        resolve(state["leave"]).register_forward_hook(leave)


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
