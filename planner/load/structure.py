"""What can be split how: the repeated blocks (pipeline unit) and the tensor-parallel pairs in a block.

Both are read off a model built on the meta device, so nothing here allocates or runs the model.
"""
from __future__ import annotations

import fnmatch
import hashlib
import math
from dataclasses import dataclass

import torch.nn as nn

__all__ = ["Blocks", "TPStructure", "find_blocks", "block_signature", "detect_tp", "model_tp_plan", "vocab_parallel",
           "VOCAB_STYLES", "COLWISE_NAMES",
           "ROWWISE_NAMES", "FUSED_NAMES"]

# Projection names that tensor parallel splits by output features (colwise) and by input features
# (rowwise), as in Megatron-LM, Hugging Face `base_model_tp_plan`s and torchtitan's Llama plan.
COLWISE_NAMES = frozenset({"q_proj", "k_proj", "v_proj", "wq", "wk", "wv", "query", "key", "value",
                           "fc1", "c_fc", "up_proj", "gate_proj", "w1", "w3", "fc_in", "dense_h_to_4h"})
# Projections that hold several tensor-parallel splits in one weight (q, k and v; gate and up): a
# column-wise split of the fused weight would give rank 0 all of q and part of k. Refused with the name.
FUSED_NAMES = frozenset({"c_attn", "qkv", "qkv_proj", "Wqkv", "query_key_value", "in_proj", "gate_up_proj",
                         "W_pack"})
ROWWISE_NAMES = frozenset({"o_proj", "wo", "out_proj", "c_proj", "dense", "fc2", "down_proj", "w2",
                           "fc_out", "dense_4h_to_h"})


VOCAB_STYLES = ("vocab_embedding", "vocab_head")
"""TP plan styles of the input embedding (rows = vocabulary split across TP ranks, Megatron-LM's
VocabParallelEmbedding) and the LM head (output features = vocabulary split, logits gathered)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Blocks:
    """The longest `nn.ModuleList` or `nn.Sequential` of same-class modules: the unit of pipeline stages."""

    path: str
    """Module path of the list, e.g. `blocks` or `transformer.h`; empty when the model has none."""
    count: int
    """Number of blocks."""
    signatures: tuple[str, ...]
    """Per block, a short hash of its structure: equal hashes are profiled once."""
    names: tuple[str, ...] = ()
    """Per block, its name in the container (`0`, `1`, ... or an `nn.Sequential`'s own keys)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TPStructure:
    """Tensor-parallel plan for one block and the TP degrees it admits."""

    plan: dict[str, str]
    """Module pattern (relative to the model, `*` for the block index) -> `colwise` | `rowwise`; and the
    vocabulary-parallel embedding and LM head by their full path -> one of VOCAB_STYLES."""
    degrees: tuple[int, ...]
    """TP sizes that divide every split dimension (whole heads per rank), ascending."""
    source: str
    """`recognised`, `TP_PLAN` (declared by the file) or `none`."""
    reason: str = ""
    """Why no tensor parallelism, when `degrees == (1,)`."""


def block_signature(module: nn.Module, index: int | None = None) -> str:
    """Class + parameter/buffer shapes and dtypes + every submodule's repr and plain attributes. An
    integer attribute equal to the block's own `index` (Hugging Face's `layer_idx`) reads as the same
    in every block, so identical layers are profiled once."""
    parts = []
    for name, sub in module.named_modules():
        plain = sorted((k, "<index>" if type(v) is int and v == index else v)
                       for k, v in vars(sub).items()
                       if not k.startswith("_") and isinstance(v, (int, float, str, bool, tuple)))
        parts.append(f"{name}:{type(sub).__qualname__}({sub.extra_repr()}){plain}")
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        parts.append(f"{name}:{tuple(t.shape)}:{t.dtype}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]


def find_blocks(model: nn.Module) -> Blocks:
    """Pick the `nn.ModuleList` or `nn.Sequential` with the most children of one class (ties: the first
    found), wherever it sits in the module tree."""
    best: tuple[int, str, nn.Module] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.ModuleList, nn.Sequential)) and len(mod) >= 2:
            classes = {type(c) for c in mod}
            if len(classes) == 1 and (best is None or len(mod) > best[0]):
                best = (len(mod), name, mod)
    if best is None:
        return Blocks(path="", count=0, signatures=())
    count, path, mod = best
    names = tuple(n for n, _ in mod.named_children())
    sigs = tuple(block_signature(c, i) for i, c in enumerate(mod))
    return Blocks(path=path, count=count, signatures=sigs, names=names)


def _head_dim(parent: nn.Module) -> int:
    hd = getattr(parent, "head_dim", None)
    return hd if isinstance(hd, int) and hd > 0 else 1


def model_tp_plan(model: nn.Module) -> dict[str, str] | None:
    """A Hugging Face model's own tensor-parallel plan (`config.base_model_tp_plan`, relative to the base
    model at `base_model_prefix`), as patterns of the whole model; None when the model has none."""
    plan = getattr(getattr(model, "config", None), "base_model_tp_plan", None)
    if not isinstance(plan, dict) or not plan:
        return None
    base = getattr(model, "base_model_prefix", "")
    prefix = f"{base}." if base and hasattr(model, base) else ""
    return {prefix + k: v for k, v in plan.items()}


def _fused(block: nn.Module, blocks_path: str) -> str:
    """A one-line reason naming the block's first fused projection, or ''."""
    for name, mod in block.named_modules():
        leaf = name.rpartition(".")[2]
        if leaf in FUSED_NAMES or isinstance(mod, nn.MultiheadAttention):
            what = "nn.MultiheadAttention (one in_proj weight for q, k, v)" if isinstance(mod, nn.MultiheadAttention) \
                else f"{type(mod).__name__} holding several projections in one weight"
            return (f"fused projection {blocks_path}.*.{name} ({what}): tensor parallel unavailable, data and "
                    "pipeline parallel are; to split it, use separate q/k/v (or gate/up) projections, or declare "
                    "TP_PLAN for projections the model has")
    return ""


def _recognise(block: nn.Module) -> dict[str, str]:
    plan = {}
    for name, mod in block.named_modules():
        leaf = name.rpartition(".")[2]
        if isinstance(mod, nn.Linear) and leaf in COLWISE_NAMES:
            plan[name] = "colwise"
        elif isinstance(mod, nn.Linear) and leaf in ROWWISE_NAMES:
            plan[name] = "rowwise"
    return plan


def _check_pairs(block: nn.Module, plan: dict[str, str]) -> str:
    """Each parent holds colwise layers feeding exactly one rowwise layer; return a reason if not."""
    parents: dict[str, list[str]] = {}
    for name in plan:
        parents.setdefault(name.rpartition(".")[0], []).append(name)
    for parent, names in parents.items():
        rows = [n for n in names if plan[n] == "rowwise"]
        cols = [n for n in names if plan[n] == "colwise"]
        if len(rows) != 1 or not cols:
            return f"'{parent or 'block'}' has {len(cols)} colwise and {len(rows)} rowwise projections"
    return ""


def detect_tp(model: nn.Module, blocks: Blocks, declared: dict[str, str] | None = None) -> TPStructure:
    """Recognise attention/MLP projection pairs in the first block (or use the file's TP_PLAN)."""
    if not blocks.count:
        return TPStructure(plan={}, degrees=(1,), source="none", reason="the model has no repeated blocks")
    block = next(iter(model.get_submodule(blocks.path)))
    prefix = f"{blocks.path}.*."
    first = blocks.names[0] if blocks.names else "0"
    own = model_tp_plan(model)
    if declared or own:
        styles = {"colwise": "colwise", "rowwise": "rowwise", "colwise_rep": "colwise", "rowwise_rep": "rowwise"}
        rel, source = {}, "TP_PLAN" if declared else "the model's base_model_tp_plan"
        for n, _ in block.named_modules():
            for p, s in (declared or own).items():
                if fnmatch.fnmatchcase(f"{blocks.path}.{first}.{n}", p.replace("*", first, 1)):
                    if s not in styles:
                        return TPStructure(plan={}, degrees=(1,), source="none", reason=(
                            f"{source} splits {blocks.path}.*.{n} as '{s}', which the planner does not emit; "
                            "declare TP_PLAN with colwise/rowwise only"))
                    module = block.get_submodule(n)
                    if not isinstance(module, nn.Linear):
                        return TPStructure(plan={}, degrees=(1,), source="none", reason=(
                            f"{source} names {blocks.path}.*.{n}, a {type(module).__name__} (tensor parallel splits "
                            "nn.Linear only; Hugging Face's Conv1D stores its weight transposed): tensor parallel "
                            "unavailable, data and pipeline parallel are"))
                    rel[n] = styles[s]
    else:
        rel, source = _recognise(block), "recognised"
        fused = _fused(block, blocks.path)
        if fused:
            return TPStructure(plan={}, degrees=(1,), source="none", reason=fused)
    reason = _check_pairs(block, rel) if rel else "no attention or MLP projections were recognised"
    if reason:
        return TPStructure(plan={}, degrees=(1,), source="none", reason=reason + "; declare TP_PLAN")
    split_sizes = []
    for name, style in rel.items():
        lin = block.get_submodule(name)
        parent = block.get_submodule(name.rpartition(".")[0]) if "." in name else block
        dim = lin.out_features if style == "colwise" else lin.in_features
        split_sizes.append(dim // _head_dim(parent))
    top = math.gcd(*split_sizes)
    degrees = tuple(t for t in range(1, top + 1) if top % t == 0)
    plan = {prefix + n: s for n, s in sorted(rel.items())}
    return TPStructure(plan={**plan, **vocab_parallel(model, blocks.path, top)}, degrees=degrees, source=source)


def vocab_parallel(model: nn.Module, blocks_path: str, top: int) -> dict[str, str]:
    """The input embedding and LM head to split along the vocabulary, as Megatron-LM and torchtitan do:
    the `nn.Embedding`s outside the blocks with the most rows V, and the `nn.Linear`s outside the blocks
    with V output features. Only when every TP degree (the divisors of `top`) divides V; otherwise
    (GPT-2's 50,257) they stay replicated. Positional tables (fewer rows) are never split."""
    outside = [(n, m) for n, m in model.named_modules()
               if not (blocks_path and (n == blocks_path or n.startswith(blocks_path + ".")))]
    vocab = max((m.num_embeddings for _, m in outside if isinstance(m, nn.Embedding)), default=0)
    if top < 2 or vocab < 2 or vocab % top:
        return {}
    out = {n: "vocab_embedding" for n, m in outside if isinstance(m, nn.Embedding) and m.num_embeddings == vocab}
    out.update({n: "vocab_head" for n, m in outside if type(m) is nn.Linear and m.out_features == vocab})
    return out
