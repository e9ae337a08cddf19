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

import copy
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.utils.flop_counter as flop_counter
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from planner.load.model_file import ModelSource, build_meta, sample_batch
from planner.types.profile import Attention, Gemm, LayerProfile, ModelProfile, ParamTensor, SavedTensor
from planner.program.runtime.policy import SELECTIVE_SAVE_OPS
from planner.load.structure import TPStructure, detect_tp, find_blocks

__all__ = ["profile_model"]

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default}
_ATTENTION = {op for op in SELECTIVE_SAVE_OPS if "scaled_dot_product" in str(op)}


def _sdpa_backward_model_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Model FLOPs of attention's backward: twice the forward (dQ, dK, dV, dScores), as for any matmul.

    torch's own formula adds the flash kernel's recomputation of QK^T (2.5x forward). That is
    hardware work, like activation recomputation, so it stays out of model FLOPs (MFU) and is left to
    the cost model's hardware-FLOPs accounting.
    """
    return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_FLOP_MAP = {  # CPU fake tensors dispatch SDPA here; torch's counter has no formula for it
    _aten._scaled_dot_product_flash_attention_for_cpu: flop_counter.sdpa_flop.__wrapped__,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_model_flops,
}


def _sid(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


@dataclass
class _Record:
    """What one forward pass showed for one layer; mutable while recording."""

    gemms: list[Gemm] = field(default_factory=list)
    attention: list[Attention] = field(default_factory=list)
    mem_bytes: int = 0
    saved: dict[int, torch.Tensor] = field(default_factory=dict)  # storage -> first saved view
    must_save: dict[int, torch.Tensor] = field(default_factory=dict)  # selective policy's cache


class _Recorder(TorchDispatchMode):
    """Attributes every forward op to the current layer: matmul shapes, attention, memory-bound bytes."""

    def __init__(self, params: set[int]):
        super().__init__()
        self.params = params
        self.layer: _Record = _Record()
        self.in_tp = False  # inside a colwise/rowwise projection
        self.producer: dict[int, str] = {}
        self.keep: list[Any] = []  # keeps storages alive so ids are never reused mid-run

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        self.keep.append(outs)
        name = func.overloadpacket.__name__
        fresh = {_sid(t) for t in outs} - {_sid(t) for t in ins}
        for t in outs:  # credit new storages, and in-place writers (dropout's bernoulli_), not views
            if _sid(t) in fresh or name.endswith("_"):
                self.producer[_sid(t)] = name
        if func in _MATMULS:
            self.layer.gemms.append(_gemm(func, args, self.in_tp))
        elif func == _aten.convolution.default:
            self.layer.gemms.append(_conv_gemm(args, outs[0], self.in_tp))
        elif func in _ATTENTION:
            q, k = args[0], args[1]
            self.layer.attention.append(Attention(batch=q.shape[0], heads=q.shape[1], q_len=q.shape[2],
                                                  kv_len=k.shape[2], head_dim=q.shape[3], dtype=_dtype(q)))
        elif fresh:  # views move no bytes
            self.layer.mem_bytes += sum(t.numel() * t.element_size() for t in ins + outs)
        if func in SELECTIVE_SAVE_OPS:
            for t in outs:
                if _sid(t) not in self.params:
                    self.layer.must_save.setdefault(_sid(t), t)
        return out

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if _sid(t) not in self.params:
            self.layer.saved.setdefault(_sid(t), t)
        return t


def _gemm(func, args, tp: bool) -> Gemm:
    if func in (_aten.addmm.default, _aten.baddbmm.default):
        args = args[1:]
    a, b = args[0], args[1]
    batch = a.shape[0] if a.dim() == 3 else 1
    return Gemm(m=a.shape[-2], k=a.shape[-1], n=b.shape[-1], batch=batch, dtype=_dtype(a), tp=tp)


def _conv_gemm(args, out: torch.Tensor, tp: bool) -> Gemm:
    """Convolution as its implicit GEMM: M = N·spatial out, N = C_out, K = C_in/groups · kernel."""
    x, w = args[0], args[1]
    return Gemm(m=out.numel() // out.shape[1], n=w.shape[0], k=math.prod(w.shape[1:]), dtype=_dtype(x), tp=tp)


def _fakeify(module: nn.Module, mode: FakeTensorMode, dtype: torch.dtype) -> None:
    """Swap meta parameters and buffers for fake CPU tensors, keeping tied parameters tied."""
    memo: dict[int, torch.Tensor] = {}

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            dt = dtype if t.is_floating_point() else t.dtype
            with mode:
                new = torch.empty(t.shape, dtype=dt, device="cpu")
            memo[id(t)] = nn.Parameter(new, t.requires_grad) if isinstance(t, nn.Parameter) else new
        return memo[id(t)]

    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = fake(p)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = fake(b)


def _units(model: nn.Module, blocks_path: str) -> Iterator[tuple[str, nn.Module]]:
    """Modules outside the blocks, as coarse as possible: the candidates for the prefix and suffix."""
    def walk(mod: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
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
    bias dim 0; rowwise: in features, weight dim 1)."""
    out = []
    for prefix, mod in units:
        for name, p in mod.named_parameters(remove_duplicate=False):
            owner, _, leaf = name.rpartition(".")
            style = (rel_plan or {}).get(owner)
            dim = -1 if style is None else 0 if style == "colwise" else 1 if leaf == "weight" else -1
            out.append(ParamTensor(name=f"{prefix}.{name}", shape=tuple(p.shape), tp_dim=dim))
    return tuple(out)


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _nbytes(module: nn.Module, dtype: torch.dtype) -> int:
    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() * (size if p.is_floating_point() else p.element_size()) for p in module.parameters())


def _first_tensor(x: Any) -> torch.Tensor | None:
    return next((t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)), None)


def _tensor_bytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _shape_tag(t: torch.Tensor, tokens: int) -> str:
    """`sp` for a tensor with one row per token (any view of it), else `replicated`."""
    return "sp" if tokens > 1 and t.numel() % tokens == 0 else "replicated"


def _records(store: dict[int, torch.Tensor], producer: dict[int, str], inputs: set[int], tokens: int,
             tags: list[str] | None = None) -> tuple[SavedTensor, ...]:
    out = []
    for i, (sid, t) in enumerate(store.items()):
        nbytes = t.untyped_storage().nbytes()
        shared = sid in inputs and i > 0  # a block input besides the hidden state (e.g. rotary tables)
        tag = "replicated" if shared else tags[i] if tags else _shape_tag(t, tokens)
        op = "input" if sid in inputs else producer.get(sid, "?")
        out.append(SavedTensor(nbytes=nbytes, shard=tag, op=op, shape=tuple(t.shape), dtype=_dtype(t)))
    return tuple(out)


def _hook_tp(block: nn.Module, rel_plan: dict[str, str], rec: _Recorder) -> list[Any]:
    """Mark ops inside the block's TP projections so their matmuls are flagged as TP-split."""
    def enter(*_):
        rec.in_tp = True

    def leave(*_):
        rec.in_tp = False
    handles = []
    for name in rel_plan:
        mod = block.get_submodule(name)
        handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    return handles


def _fresh(x: Any) -> Any:
    """A leaf copy of a captured input that needs grad like the original did."""
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_(x.requires_grad)
    return x


@dataclass
class _BlockRun:
    record: _Record
    producer: dict[int, str]
    hidden: torch.Tensor
    inputs: set[int]
    output: torch.Tensor | None


def _block_run(block: nn.Module, args: tuple, kwargs: dict, mode: FakeTensorMode,
               rel_plan: dict[str, str]) -> _BlockRun:
    """One forward of a block alone, recording saved tensors and the selective policy's cache."""
    params = {_sid(p) for p in [*block.parameters(), *block.buffers()]}
    rec = _Recorder(params)
    args, kwargs = tuple(_fresh(a) for a in args), {k: _fresh(v) for k, v in kwargs.items()}
    handles = _hook_tp(block, rel_plan, rec)
    try:
        with mode, rec, torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
            out = block(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    hidden = _first_tensor(args)
    inputs = {_sid(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
    rec.keep.append((args, kwargs, out))
    return _BlockRun(rec.layer, rec.producer, hidden, inputs, _first_tensor(out))


def _narrow(block: nn.Module, rel_plan: dict[str, str], t: int) -> nn.Module:
    """A meta copy of `block` whose TP projections hold 1/t of their features, as one TP rank does."""
    block = copy.deepcopy(block)
    for name, style in rel_plan.items():
        lin = block.get_submodule(name)
        out_f, in_f = lin.weight.shape
        shape = (out_f // t, in_f) if style == "colwise" else (out_f, in_f // t)
        lin.weight = nn.Parameter(torch.empty(shape, device="meta"))
        if lin.bias is not None and style == "colwise":
            lin.bias = nn.Parameter(torch.empty(out_f // t, device="meta"))
    return block


def _tp_tags(full: list[torch.Tensor], part: list[torch.Tensor], t: int, tokens: int) -> list[str] | None:
    """Match the full and the 1/t block's saved tensors by order; None if the runs do not line up."""
    if len(full) != len(part):
        return None
    tags = []
    for a, b in zip(full, part):
        na, nb = a.untyped_storage().nbytes(), b.untyped_storage().nbytes()
        tags.append("tp" if nb * t == na and t > 1 else _shape_tag(a, tokens) if na == nb else "replicated")
    return tags


def _mode_stores(run: _BlockRun) -> dict[str, dict[int, torch.Tensor]]:
    """Storages kept under each recompute mode: all saved; input + policy cache; input only."""
    hidden = {_sid(run.hidden): run.hidden}
    return {"none": run.record.saved, "selective": {**hidden, **run.record.must_save}, "full": hidden}


def _block_saved(run: _BlockRun, part: _BlockRun | None, t: int, tokens: int) -> dict[str, tuple]:
    """Saved storages of one block under each recompute mode, with shard tags."""
    part_stores = _mode_stores(part) if part is not None else None
    out = {}
    for mode, store in _mode_stores(run).items():
        tags = None
        if part_stores is not None:
            tags = _tp_tags(list(store.values()), list(part_stores[mode].values()), t, tokens)
        out[mode] = _records(store, run.producer, run.inputs, tokens, tags)
        if mode != "none":
            out[mode] += (_RNG_STATE,)
    return out


# A checkpointed region keeps the CPU generator's state to replay dropout in backward
# (`preserve_rng_state=True`); on GPUs the device generator's few bytes come on top.
_RNG_STATE = SavedTensor(nbytes=torch.get_rng_state().numel(), shard="replicated", op="rng_state",
                         shape=tuple(torch.get_rng_state().shape), dtype="uint8")


def _flops(counts: dict[str, dict[Any, int]], key: str) -> int:
    return sum(counts.get(key, {}).values())


@dataclass
class _ModelRun:
    """The whole (cut-down) model's forward and backward: FLOPs per module, prefix/suffix records."""

    fwd: dict[str, dict[Any, int]]
    total: dict[str, dict[Any, int]]
    prefix: _Record
    suffix: _Record
    producer: dict[int, str]
    block_inputs: list[tuple[tuple, dict]]
    prefix_units: list[str]
    keep: list[Any]


def _run_model(model: nn.Module, reps: nn.ModuleList, units: list[tuple[str, nn.Module]], batch: tuple,
               loss_fn: Any, mode: FakeTensorMode, tp_plan: dict[str, str]) -> _ModelRun:
    rec = _Recorder({_sid(p) for p in [*model.parameters(), *model.buffers()]})
    prefix, suffix = _Record(), _Record()
    rec.layer = prefix
    captured: list[tuple[tuple, dict]] = [((), {})] * len(reps)
    ran_before: list[str] = []
    handles = []

    def block_pre(i):
        def hook(_, args, kwargs):
            captured[i] = (args, kwargs)
            rec.layer = _Record()  # block internals are measured standalone
        return hook

    def block_post(*_):
        rec.layer = suffix

    for i, block in enumerate(reps):
        handles += [block.register_forward_pre_hook(block_pre(i), with_kwargs=True),
                    block.register_forward_hook(block_post)]
        handles += _hook_tp(block, tp_plan, rec)
    for name, unit in units:
        handles.append(unit.register_forward_pre_hook(
            lambda *_, n=name: ran_before.append(n) if rec.layer is prefix else None))
    try:
        with mode, flop_counter.FlopCounterMode(display=False, custom_mapping=_FLOP_MAP) as fc:
            inputs, targets = (mode.from_tensor(t) for t in batch)
            with rec, torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
                loss = loss_fn(model(inputs), targets)
            fwd = {k: dict(v) for k, v in fc.get_flop_counts().items()}
            loss.backward()
            total = {k: dict(v) for k, v in fc.get_flop_counts().items()}
    finally:
        for h in handles:
            h.remove()
    return _ModelRun(fwd, total, prefix, suffix, rec.producer, captured, ran_before, rec.keep)


def _edge_layer(name: str, units: list[tuple[str, nn.Module]], record: _Record, fwd: int, total: int,
                output: torch.Tensor | None, run: _ModelRun, tokens: int, dtype: torch.dtype) -> LayerProfile:
    saved = _records(record.saved, run.producer, set(), tokens)
    return LayerProfile(
        name=name, kind=name, modules=tuple(n for n, _ in units),
        params=sum(_numel(m) for _, m in units), param_bytes=sum(_nbytes(m, dtype) for _, m in units),
        fwd_flops=fwd, bwd_flops=total - fwd, gemms=tuple(record.gemms), attention=tuple(record.attention),
        fwd_mem_bytes=record.mem_bytes, saved={m: saved for m in ("none", "selective", "full")},
        output_bytes=_tensor_bytes(output), tensors=_tensors(units))


def profile_model(source: ModelSource, micro_batch: int = 1, dtype: str = "bfloat16") -> ModelProfile:
    """Measure every layer of `source`'s model at `micro_batch` samples in `dtype` (see module doc)."""
    torch_dtype = getattr(torch, dtype)
    model = build_meta(source)
    params, tied = sum(p.numel() for p in model.parameters()), _tied_groups(model)
    blocks = find_blocks(model)
    tp: TPStructure = detect_tp(model, blocks, source.tp_plan)
    rel_plan = {k.removeprefix(f"{blocks.path}.*."): v for k, v in tp.plan.items()}
    batch = sample_batch(source, micro_batch, model)
    batch = tuple(t.to(torch_dtype) if t.is_floating_point() else t for t in batch)
    inputs = batch[0]
    seq_len = inputs.shape[1] if inputs.dim() >= 2 and not inputs.is_floating_point() else 1
    tokens = micro_batch * seq_len if seq_len > 1 else 0

    sigs = list(dict.fromkeys(blocks.signatures))
    full_list = model.get_submodule(blocks.path) if blocks.count else nn.ModuleList()
    reps = nn.ModuleList(full_list[blocks.signatures.index(s)] for s in sigs)
    t = next((d for d in tp.degrees if d > 1), 1)
    narrowed = [_narrow(b, rel_plan, t) for b in reps] if t > 1 else []
    if blocks.count:
        parent, _, leaf = blocks.path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, reps)
    units = list(_units(model, blocks.path))
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    _fakeify(model, mode, torch_dtype)
    for b in narrowed:
        _fakeify(b, mode, torch_dtype)
    run = _run_model(model, reps, units, batch, source.loss, mode, rel_plan)

    root = type(model).__name__
    unit_keys = [f"{root}.{n}" for n, _ in units]
    pre = [u for u in units if u[0] in run.prefix_units or not run.block_inputs]
    post = [u for u in units if u not in pre]
    block_keys = [f"{root}.{blocks.path}.{i}" for i in range(len(reps))]

    def edges(counts: dict[str, dict[Any, int]]) -> tuple[int, int]:
        """(prefix, suffix) FLOPs: ops on the root outside units and blocks go to the prefix, the loss
        (outside the root module) to the suffix."""
        loose = _flops(counts, root) - sum(_flops(counts, k) for k in unit_keys + block_keys)
        loss = _flops(counts, "Global") - _flops(counts, root)
        return (sum(_flops(counts, f"{root}.{n}") for n, _ in pre) + loose,
                sum(_flops(counts, f"{root}.{n}") for n, _ in post) + loss)

    (prefix_fwd, suffix_fwd), (prefix_tot, suffix_tot) = edges(run.fwd), edges(run.total)
    first_hidden = _first_tensor(run.block_inputs[0]) if reps else None
    layers = [_edge_layer("prefix", pre, run.prefix, prefix_fwd, prefix_tot, first_hidden, run, tokens,
                          torch_dtype)]
    rep_layers = []
    for i, block in enumerate(reps):
        args, kwargs = run.block_inputs[i]
        main = _block_run(block, args, kwargs, mode, rel_plan)
        part = _block_run(narrowed[i], args, kwargs, mode, rel_plan) if narrowed else None
        fwd, tot = _flops(run.fwd, block_keys[i]), _flops(run.total, block_keys[i])
        rep_layers.append(dict(
            kind="block", params=_numel(block), param_bytes=_nbytes(block, torch_dtype), fwd_flops=fwd,
            bwd_flops=tot - fwd, gemms=tuple(main.record.gemms), attention=tuple(main.record.attention),
            fwd_mem_bytes=main.record.mem_bytes, saved=_block_saved(main, part, t, tokens),
            output_bytes=_tensor_bytes(main.output), signature=sigs[i]))
    for i, sig in enumerate(blocks.signatures):
        name = f"{blocks.path}.{i}"
        layers.append(LayerProfile(name=name, modules=(name,), tensors=_tensors([(name, full_list[i])], rel_plan),
                                   **rep_layers[sigs.index(sig)]))
    layers.append(_edge_layer("suffix", post, run.suffix, suffix_fwd, suffix_tot, None, run, tokens,
                              torch_dtype))
    return ModelProfile(
        ref=source.ref, model_name=root, file_sha256=source.file_sha256, micro_batch=micro_batch,
        seq_len=seq_len, dtype=dtype, params=params, layers=tuple(layers), blocks_path=blocks.path,
        tp_plan=tp.plan, tp_degrees=tp.degrees, tp_note=tp.reason or f"TP plan {tp.source}", tied=tied)
