"""Profile a model's FLOPs and activation memory per layer on fake tensors: no weight is allocated.

How (see ../shared/TORCH_NOTES.md for why each choice):
- The model is built on the meta device; its block list is cut down to one representative block per
  distinct block signature, and the remaining parameters are swapped for fake CPU tensors in the
  profiling dtype. Identical blocks are therefore measured once.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward and backward, keyed by module,
  with the CPU flash-attention ops mapped to torch's SDPA formulas (otherwise they count as zero).
- Saved activations: `saved_tensors_hooks`, each storage counted once, parameters excluded.
  Selective recompute keeps the block input and the outputs of `runtime.SELECTIVE_SAVE_OPS` (what
  torch's selective checkpointing caches); full recompute keeps only the block's hidden-state input.
  Both also keep the CPU RNG state (5,056 bytes) that checkpointing saves to replay dropout.
- Shard tags: each block is measured again with its tensor-parallel layers narrowed by t (whole heads
  per rank, as the emitted program splits them); a saved tensor that shrank by t is `tp`, one that kept
  its size and has a sequence dimension is `sp` (split only with sequence parallel), else `replicated`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.utils.flop_counter as flop_counter
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from planner.load.model_file import ModelSource, build_meta, sample_batch
from planner.load.structure import VOCAB_STYLES, TPStructure, detect_tp, find_blocks
from planner.program.runtime.policy import batch_map, forward_loss, takes_targets, token_count, training_kwargs
from planner.program.runtime.cuda_ops import FusedOnCuda
from planner.profiling.blocks import block_run, block_saved, hook_tp, narrow, tp_gemms
from planner.profiling.recorder import FLOP_MAP, Record, Recorder, fakeify, first_tensor, saved_records, storage_id, tensor_bytes
from planner.types.profile import LayerProfile, ModelProfile, ParamTensor

__all__ = ["profile_model"]


class _Loose(nn.Module):
    """Holds a parameter that sits directly on the root or on an ancestor of the blocks (a ViT's class
    token and position embedding), so it can be a unit of the prefix or suffix like a module."""

    def __init__(self, param: nn.Parameter):
        super().__init__()
        self.value = param


def _units(model: nn.Module, blocks_path: str) -> Iterator[tuple[str, nn.Module]]:
    """Modules outside the blocks, as coarse as possible, and parameters held directly by the root or an
    ancestor of the blocks: the candidates for the prefix and suffix."""
    def walk(mod: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
        for name, p in mod.named_parameters(recurse=False):
            yield f"{prefix}{name}", _Loose(p)
        for name, child in mod.named_children():
            path = f"{prefix}{name}"
            if path == blocks_path:
                continue
            if blocks_path.startswith(path + "."):
                yield from walk(child, path + ".")
            else:
                yield path, child
    yield from walk(model, "")


def _tied_groups(model: nn.Module) -> tuple[tuple[str, ...], ...]:
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return tuple(tuple(names) for names in by_id.values() if len(names) > 1)


def _tensors(units: list[tuple[str, nn.Module]], rel_plan: dict[str, str] | None = None) -> tuple:
    """Each unit's parameters by full name, with the dim TP splits (colwise: out features, so weight and
    bias dim 0; rowwise: in features, weight dim 1; the vocabulary-parallel embedding and head: the
    vocabulary, dim 0 of both). `rel_plan` is relative to the units for blocks, full paths for edges."""
    out = []
    for prefix, mod in units:
        for name, p in mod.named_parameters(remove_duplicate=False):
            owner, _, leaf = name.rpartition(".")
            style = (rel_plan or {}).get(owner)
            if style is None and rel_plan and not isinstance(mod, _Loose):
                style = rel_plan.get(f"{prefix}.{owner}" if owner else prefix)
            style = "colwise" if style in VOCAB_STYLES else style
            dim = -1 if style is None else 0 if style == "colwise" else 1 if leaf == "weight" else -1
            full = prefix if isinstance(mod, _Loose) else f"{prefix}.{name}"
            out.append(ParamTensor(name=full, shape=tuple(p.shape), tp_dim=dim))
    return tuple(out)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _nbytes(module: nn.Module, dtype: torch.dtype) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() * (size if p.is_floating_point() else p.element_size()) for p in module.parameters())


def _flops(counts: dict[str, dict[Any, int]], key: str) -> int:
    return sum(counts.get(key, {}).values())


@dataclass
class _ModelRun:
    """The whole (cut-down) model's forward and backward: FLOPs per module, prefix/suffix records."""

    fwd: dict[str, dict[Any, int]]
    total: dict[str, dict[Any, int]]
    prefix: Record
    suffix: Record
    producer: dict[int, str]
    block_inputs: list[tuple[tuple, dict]]
    prefix_units: list[str]
    keep: list[Any]
    vocab_read_elsewhere: bool = False
    """An op outside the embedding/head read the embedding's weight (see `_ReadElsewhere`)."""


def _run_model(model: nn.Module, reps: nn.ModuleList, units: list[tuple[str, nn.Module]], batch: tuple,
               source: ModelSource, mode: FakeTensorMode, tp_plan: dict[str, str], vocab: dict[str, str]) -> _ModelRun:
    rec = Recorder({storage_id(p) for p in [*model.parameters(), *model.buffers()]})
    prefix, suffix = Record(), Record()
    rec.layer = prefix
    captured: list[tuple[tuple, dict]] = [((), {})] * len(reps)
    ran_before: list[str] = []
    handles = []

    def block_pre(i):
        def hook(_, args, kwargs):
            captured[i] = (args, kwargs)
            rec.layer = Record()  # block internals are measured standalone
        return hook

    def block_post(*_):
        rec.layer = suffix

    for i, block in enumerate(reps):
        handles += [block.register_forward_pre_hook(block_pre(i), with_kwargs=True),
                    block.register_forward_hook(block_post)]
        handles += hook_tp(block, tp_plan, rec)
    handles += hook_tp(model, {n: s for n, s in vocab.items() if s == "vocab_head"}, rec)
    elsewhere = _ReadElsewhere({id(model.get_submodule(n).weight) for n, s in vocab.items() if s == "vocab_embedding"})
    for name in vocab:
        handles += elsewhere.watch(model.get_submodule(name))
    for name, unit in units:
        handles.append(unit.register_forward_pre_hook(
            lambda *_, n=name: ran_before.append(n) if rec.layer is prefix else None))
    loose = {id(u.value): n for n, u in units if isinstance(u, _Loose)}
    try:
        with mode, _UsedBefore(loose, lambda: rec.layer is prefix, ran_before), elsewhere, \
                flop_counter.FlopCounterMode(display=False, custom_mapping=FLOP_MAP) as fc:
            inputs, targets = (batch_map(mode.from_tensor, t) for t in batch)
            with rec, torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
                loss = forward_loss(model, inputs, targets, source.loss, takes_targets(model, source.has_loss),
                                    training_kwargs(model))
            fwd = {k: dict(v) for k, v in fc.get_flop_counts().items()}
            loss.backward()
            total = {k: dict(v) for k, v in fc.get_flop_counts().items()}
    finally:
        for h in handles:
            h.remove()
    return _ModelRun(fwd, total, prefix, suffix, rec.producer, captured, ran_before, rec.keep, elsewhere.found)


class _ReadElsewhere(TorchFunctionMode):
    """Notes whether an op outside the vocabulary-parallel modules' own forwards reads an embedding's
    weight (`x @ wte.weight.T` as the LM head): split along the vocabulary, that op would get a DTensor,
    so the planner keeps the embedding and head whole instead."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights, self.depth, self.found = weights, 0, False

    def watch(self, module: nn.Module) -> list[Any]:
        def enter(*_):
            self.depth += 1

        def leave(*_):
            self.depth -= 1
        return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.weights and not self.depth and not self.found:
            self.found = any(id(t) in self.weights for t in tree_flatten((args, kwargs or {}))[0])
        return func(*args, **(kwargs or {}))


class _UsedBefore(TorchFunctionMode):
    """Notes which loose parameters (by id) an op reads while the prefix runs (before the first block)."""

    def __init__(self, loose: dict[int, str], in_prefix, found: list[str]):
        super().__init__()
        self.loose, self.in_prefix, self.found = loose, in_prefix, found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.loose and self.in_prefix():
            for t in tree_flatten((args, kwargs or {}))[0]:
                name = self.loose.get(id(t))
                if name is not None and name not in self.found:
                    self.found.append(name)
        return func(*args, **(kwargs or {}))


def _edge_layer(name: str, units: list[tuple[str, nn.Module]], record: Record, fwd: int, total: int,
                output: torch.Tensor | None, run: _ModelRun, tokens: int, dtype: torch.dtype,
                vocab: dict[str, str]) -> LayerProfile:
    saved = saved_records(record.saved, run.producer, set(), tokens)
    return LayerProfile(
        name=name, kind=name, modules=tuple(n for n, _ in units),
        params=sum(_numel(m) for _, m in units), param_bytes=sum(_nbytes(m, dtype) for _, m in units),
        fwd_flops=fwd, bwd_flops=total - fwd, gemms=tuple(record.gemms), attention=tuple(record.attention),
        fwd_mem_bytes=record.mem_bytes, fwd_ops=record.ops, saved={m: saved for m in ("none", "selective", "full")},
        output_bytes=tensor_bytes(output), tensors=_tensors(units, vocab))


@dataclass
class _Cut:
    """The meta model cut down to one representative block per signature, with fake parameters."""

    model: nn.Module
    blocks: Any
    """`structure.Blocks` of the full model."""
    full_list: nn.Module
    reps: nn.ModuleList
    sigs: list[str]
    narrowed: list[nn.Module]
    """The representatives with TP layers narrowed by `t` (empty when the model has no TP)."""
    t: int
    tp: TPStructure
    rel_plan: dict[str, str]
    mode: FakeTensorMode
    params: int
    """Parameters of the full model (tied ones once), counted before the cut."""
    tied: tuple[tuple[str, ...], ...]


def _cut(source: ModelSource, torch_dtype: torch.dtype) -> _Cut:
    model = build_meta(source)
    params, tied = sum(p.numel() for p in model.parameters()), _tied_groups(model)
    blocks = find_blocks(model)
    tp: TPStructure = detect_tp(model, blocks, source.tp_plan)
    rel_plan = {k.removeprefix(f"{blocks.path}.*."): v for k, v in tp.plan.items() if v not in VOCAB_STYLES}
    sigs = list(dict.fromkeys(blocks.signatures))
    full_list = model.get_submodule(blocks.path) if blocks.count else nn.ModuleList()
    container = nn.Sequential if isinstance(full_list, nn.Sequential) else nn.ModuleList  # called whole, or iterated
    reps = container(*[full_list[blocks.signatures.index(s)] for s in sigs]) if container is nn.Sequential \
        else nn.ModuleList(full_list[blocks.signatures.index(s)] for s in sigs)
    t = next((d for d in tp.degrees if d > 1), 1)
    narrowed = [narrow(b, rel_plan, t) for b in reps] if t > 1 else []
    if blocks.count:
        parent, _, leaf = blocks.path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, reps)
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    for m in [model, *narrowed]:
        fakeify(m, mode, torch_dtype)
    return _Cut(model, blocks, full_list, reps, sigs, narrowed, t, tp, rel_plan, mode, params, tied)


def _block_layers(cut: _Cut, run: _ModelRun, block_keys: list[str], tokens: int,
                  torch_dtype: torch.dtype) -> list[LayerProfile]:
    """Every block of the full model, each a copy of its representative's measurement."""
    measured = []
    for i, block in enumerate(cut.reps):
        args, kwargs = run.block_inputs[i]
        main = block_run(block, args, kwargs, cut.mode, cut.rel_plan, backward=True)
        part = block_run(cut.narrowed[i], args, kwargs, cut.mode, cut.rel_plan) if cut.narrowed else None
        fwd, tot = _flops(run.fwd, block_keys[i]), _flops(run.total, block_keys[i])
        measured.append(dict(
            kind="block", params=_numel(block), param_bytes=_nbytes(block, torch_dtype), fwd_flops=fwd,
            bwd_flops=tot - fwd, gemms=tp_gemms(main, part, cut.t), attention=tuple(main.record.attention),
            fwd_mem_bytes=main.record.mem_bytes, fwd_ops=main.record.ops, saved=block_saved(main, part, cut.t, tokens),
            bwd_mem_bytes=main.backward.mem_bytes if main.backward else None,
            bwd_ops=main.backward.ops if main.backward else None,
            output_bytes=tensor_bytes(main.output), signature=cut.sigs[i]))
    layers = []
    for i, sig in enumerate(cut.blocks.signatures):
        name = f"{cut.blocks.path}.{cut.blocks.names[i]}"
        layers.append(LayerProfile(name=name, modules=(name,), tensors=_tensors([(name, cut.full_list[i])], cut.rel_plan),
                                   **measured[cut.sigs.index(sig)]))
    return layers


def _edge_flops(counts: dict[str, dict[Any, int]], root: str, pre: list, post: list, block_keys: list[str],
                unit_keys: list[str]) -> tuple[int, int]:
    """(prefix, suffix) FLOPs: ops on the root outside units and blocks go to the prefix, the loss
    (outside the root module) to the suffix."""
    loose = _flops(counts, root) - sum(_flops(counts, k) for k in unit_keys + block_keys)
    loss = _flops(counts, "Global") - _flops(counts, root)
    return (sum(_flops(counts, f"{root}.{n}") for n, _ in pre) + loose,
            sum(_flops(counts, f"{root}.{n}") for n, _ in post) + loss)


def profile_model(source: ModelSource, micro_batch: int = 1, dtype: str = "bfloat16") -> ModelProfile:
    """Measure every layer of `source`'s model at `micro_batch` samples in `dtype` (see module doc)."""
    with FusedOnCuda():
        return _profile(source, micro_batch, dtype)


def _profile(source: ModelSource, micro_batch: int, dtype: str) -> ModelProfile:
    torch_dtype = getattr(torch, dtype)
    cut = _cut(source, torch_dtype)
    model = cut.model
    batch = sample_batch(source, micro_batch, model)
    batch = batch_map(lambda t: (t.to(torch_dtype) if t.is_floating_point() else t).contiguous(), batch)
    seq_len = token_count(batch[0]) // micro_batch
    tokens = micro_batch * seq_len if seq_len > 1 else 0
    units = list(_units(model, cut.blocks.path))
    vocab = {k: v for k, v in cut.tp.plan.items() if v in VOCAB_STYLES}
    run = _run_model(model, cut.reps, units, batch, source, cut.mode, cut.rel_plan, vocab)
    plan = cut.tp.plan
    if run.vocab_read_elsewhere:  # all or nothing: a head tied to a whole embedding cannot be split
        vocab, plan = {}, {k: v for k, v in plan.items() if v not in VOCAB_STYLES}
    root = type(model).__name__
    pre = [u for u in units if u[0] in run.prefix_units or not run.block_inputs]
    post = [u for u in units if u not in pre]
    keys = ([f"{root}.{cut.blocks.path}.{i}" for i in range(len(cut.reps))], [f"{root}.{n}" for n, _ in units])
    (prefix_fwd, suffix_fwd) = _edge_flops(run.fwd, root, pre, post, *keys)
    (prefix_tot, suffix_tot) = _edge_flops(run.total, root, pre, post, *keys)
    first_hidden = first_tensor(run.block_inputs[0]) if cut.reps else None
    layers = [_edge_layer("prefix", pre, run.prefix, prefix_fwd, prefix_tot, first_hidden, run, tokens, torch_dtype, vocab),
              *_block_layers(cut, run, keys[0], tokens, torch_dtype),
              _edge_layer("suffix", post, run.suffix, suffix_fwd, suffix_tot, None, run, tokens, torch_dtype, vocab)]
    return ModelProfile(
        ref=source.ref, model_name=root, file_sha256=source.file_sha256, micro_batch=micro_batch,
        seq_len=seq_len, dtype=dtype, params=cut.params, layers=tuple(layers), blocks_path=cut.blocks.path,
        tp_plan=plan, tp_degrees=cut.tp.degrees, tp_note=cut.tp.reason or f"TP plan {cut.tp.source}",
        tied=cut.tied)
