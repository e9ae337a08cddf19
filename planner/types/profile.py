"""The profile's data types: what the profiler measured per layer, as plain JSON-able records."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SCHEMA", "RECOMPUTE_MODES", "SHARD_TAGS", "ParamTensor", "Gemm", "Attention", "SavedTensor", "LayerProfile",
           "ModelProfile"]

SCHEMA = 4
RECOMPUTE_MODES = ("none", "selective", "full")
SHARD_TAGS = ("tp", "sp", "replicated")
"""How a saved activation shards: split by tensor parallel; h-wide with a sequence dimension, so split
only when sequence parallel is on; or the same on every rank."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ParamTensor:
    """One parameter of a layer: what a rank's share of it is depends on its shape, not just its size
    (TP splits one dim; FSDP pads dim 0 to a multiple of the shard count)."""

    name: str
    """Full parameter name in the model (e.g. `blocks.3.attn.q_proj.weight`)."""
    shape: tuple[int, ...]
    tp_dim: int = -1
    """The dim tensor parallel splits (0 colwise weight and bias, 1 rowwise weight), -1 if replicated."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Gemm:
    """One forward matmul C[batch, m, n] = A[batch, m, k] @ B[batch, k, n]."""

    m: int
    n: int
    k: int
    batch: int = 1
    dtype: str = "bfloat16"
    tp: bool = False
    """True when tensor parallel splits n (colwise) or k (rowwise) of this matmul by the TP degree."""

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


@dataclass(frozen=True, kw_only=True, slots=True)
class Attention:
    """One fused attention call (forward): batch x heads, query/key lengths, head size."""

    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    dtype: str = "bfloat16"
    causal: bool = False
    """Causal masking (`is_causal`): flash kernels skip the score tiles above the diagonal."""

    @property
    def flops(self) -> int:
        """QK^T and PV: 4·b·heads·s_q·s_kv·d, the full square as torch's counter and Megatron count it."""
        return 4 * self.batch * self.heads * self.q_len * self.kv_len * self.head_dim


@dataclass(frozen=True, kw_only=True, slots=True)
class SavedTensor:
    """One storage kept for backward (counted once however many views of it autograd saved)."""

    nbytes: int
    shard: str
    """One of SHARD_TAGS."""
    op: str
    """The op that produced it (`input` for the layer's own input)."""
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.shard not in SHARD_TAGS:
            raise ValueError(f"shard tag {self.shard!r} is not one of {SHARD_TAGS}")


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerProfile:
    """A profiled unit: the prefix (before the blocks), one block, or the suffix (after, with the loss)."""

    name: str
    """`prefix`, `suffix` or the block's module path (e.g. `blocks.7`)."""
    kind: str
    """`prefix`, `block` or `suffix`."""
    modules: tuple[str, ...]
    """Module paths this layer holds (what a pipeline stage keeps of the model)."""
    params: int
    param_bytes: int
    fwd_flops: int
    bwd_flops: int
    gemms: tuple[Gemm, ...]
    """Forward matmuls; backward runs two per forward matmul (dA: m,k,n and dB: k,n,m)."""
    attention: tuple[Attention, ...]
    fwd_mem_bytes: int
    """Bytes read and written by the forward's memory-bound (non-matmul) ops, unfused."""
    saved: dict[str, tuple[SavedTensor, ...]]
    """Recompute mode -> the storages kept for backward per micro-batch under that mode."""
    output_bytes: int
    """Bytes of the hidden state this layer hands to the next (a pipeline boundary's p2p message)."""
    signature: str = ""
    """Block structure hash: blocks with equal signatures share one measurement."""
    tensors: tuple[ParamTensor, ...] = ()
    """The parameters this layer holds (tied ones listed in every layer that uses them)."""
    fwd_ops: int = 0
    """Operators the forward dispatches (views included): what a host-bound device pays per op."""
    bwd_mem_bytes: int | None = None
    """Bytes read and written by the backward's memory-bound ops (matmuls and attention kernels
    excluded), measured by running the block's backward; None where not measured (prefix, suffix)."""
    bwd_ops: int | None = None
    """Operators the backward dispatches; None where not measured."""

    def saved_bytes(self, mode: str = "none", shard: str | None = None) -> int:
        return sum(t.nbytes for t in self.saved[mode] if shard is None or t.shard == shard)


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelProfile:
    """Per-layer FLOPs and memory of one model at one micro-batch size, sequence length and dtype."""

    ref: str
    """`path:factory` of the model file."""
    model_name: str
    file_sha256: str
    micro_batch: int
    seq_len: int
    """Tokens per sample (the inputs' second dimension); 1 for non-sequence inputs."""
    dtype: str
    params: int
    """Unique parameters (tied weights counted once)."""
    layers: tuple[LayerProfile, ...]
    blocks_path: str
    tp_plan: dict[str, str]
    tp_degrees: tuple[int, ...]
    tp_note: str = ""
    tied: tuple[tuple[str, ...], ...] = ()
    """Groups of parameter names that share one tensor (e.g. input embedding and LM head)."""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ValueError(f"profile schema {self.schema} is not {SCHEMA}; profile the model again")

    @property
    def blocks(self) -> tuple[LayerProfile, ...]:
        return tuple(l for l in self.layers if l.kind == "block")

    @property
    def fwd_flops(self) -> int:
        return sum(l.fwd_flops for l in self.layers)

    @property
    def bwd_flops(self) -> int:
        return sum(l.bwd_flops for l in self.layers)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ModelProfile":
        return _build(cls, json.loads(text))


_NESTED = {"layers": LayerProfile, "gemms": Gemm, "attention": Attention, "tensors": ParamTensor}


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild frozen dataclasses (and tuples, which JSON turns into lists) from `asdict` output."""
    kw = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        if f.name in _NESTED:
            v = tuple(_build(_NESTED[f.name], x) for x in v)
        elif f.name == "saved":
            v = {mode: tuple(SavedTensor(**{**t, "shape": tuple(t["shape"])}) for t in ts) for mode, ts in v.items()}
        elif f.name == "shape":
            v = tuple(v)
        elif f.name == "tied":
            v = tuple(tuple(g) for g in v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)
