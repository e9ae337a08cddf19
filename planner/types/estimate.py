"""`Estimate`: what the cost model predicts for one strategy (seconds, bytes), plain data with JSON.

The cost model fills the prediction for every candidate it prices; the chosen plan's estimate also
carries the details its report, pictures and program need (`with_details`): per-chunk times for the
timeline, the bytes each pipeline rank holds between steps, the device peak for MFU, and the link
classes each mesh axis runs over. Standard library only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Estimate", "ChunkTime", "HeldBytes"]


_JSON_NAMES = {"memory_bytes_per_pp_rank": "memory_bytes_per_stage"}
"""Fields whose plan.json key keeps its schema-1 name (keys are added, never renamed)."""
_DETAILS = ("chunk_times", "held_bytes_per_pp_rank", "peak_flops", "links")


@dataclass(frozen=True, slots=True)
class ChunkTime:
    """One model chunk, per micro-batch: what the timeline replays."""

    fwd: float
    """Forward seconds (TP collectives included)."""
    bwd: float
    """Backward seconds (recompute and TP collectives included)."""
    send: float
    """Seconds to send its output to the next chunk (0 for the last)."""


@dataclass(frozen=True, slots=True)
class HeldBytes:
    """What one rank of a pipeline rank holds after an optimizer step (sharded master weights,
    gradients, AdamW moments; no unsharded copies): the emitted program reports the same numbers."""

    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Estimate:
    """What the cost model predicts for one strategy (times in seconds, memory in bytes)."""

    step_time_s: float
    tokens_per_s: float
    samples_per_s: float
    model_tflops_per_gpu: float
    hardware_tflops_per_gpu: float
    mfu: float
    hfu: float
    memory_bytes_per_pp_rank: tuple[int, ...]
    """Peak bytes of one GPU of each pipeline rank (all GPUs of a pipeline rank hold the same); a
    pipeline rank holds `vpp` chunks. plan.json key: `memory_bytes_per_stage` (kept for schema 1)."""
    memory_bytes_per_rank: tuple[dict[str, int], ...]
    """Per pipeline rank: weights / grads / optimizer / activations / buffers."""
    memory_capacity_bytes: int
    memory_limit_bytes: int
    """What a plan may use per GPU: the runtime reserve plus the memory fraction of the rest."""
    breakdown: dict[str, float]
    """Seconds on the critical rank: compute, bubble, tp_comm, pp_comm, dp_comm, recompute, optimizer."""
    feasible: bool
    critical_rank: int = 0
    """The busiest pipeline rank, whose time the breakdown splits."""
    bound: str = ""
    """What limits the step (the largest part of the breakdown)."""
    chunk_times: tuple[ChunkTime, ...] = ()
    """Detail of the chosen plan: per chunk, in pipeline order."""
    held_bytes_per_pp_rank: tuple[HeldBytes, ...] = ()
    """Detail of the chosen plan: per pipeline rank."""
    peak_flops: float = 0.0
    """Detail of the chosen plan: one device's dense peak FLOP/s in the planning dtype."""
    links: dict[str, list[str]] = field(default_factory=dict)
    """Detail of the chosen plan: the link classes each mesh axis (size > 1) runs over."""

    def to_dict(self) -> dict:
        out = {}
        for key, value in asdict(self).items():
            if key in _DETAILS and not value:
                continue  # only the chosen plan carries details
            out[_JSON_NAMES.get(key, key)] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Estimate":
        d = dict(d)
        d["memory_bytes_per_pp_rank"] = tuple(d.pop("memory_bytes_per_stage"))
        d["memory_bytes_per_rank"] = tuple(d["memory_bytes_per_rank"])
        d.setdefault("memory_limit_bytes", d["memory_capacity_bytes"])  # plans written before the fraction
        d["chunk_times"] = tuple(ChunkTime(**t) for t in d.get("chunk_times", ()))
        d["held_bytes_per_pp_rank"] = tuple(HeldBytes(**h) for h in d.get("held_bytes_per_pp_rank", ()))
        return cls(**d)
