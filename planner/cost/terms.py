"""What a pipeline rank adds to its simulated finish: the data-parallel communication it cannot hide
and its optimizer step, written as per-layer sums plus one pure function (`dp_exposed`).

The cost model and the partition solver both use these: the solver needs every rank's end time as
sums over the layers a partition gives it (so its search space is linear in the stage boundaries),
and one formula shared by both means the solver's objective is the cost model's step time, not a
stand-in for it. `dp_exposed` works on floats (the cost model) and on integers (the solver).

The physics, per pipeline rank, with n micro-batches:
- DDP (`zero=0`, no TP): one all-reduce of the gradients runs in buckets during the rank's last
  backward; what outlasts that backward shows, and never less than the last bucket's all-reduce.
  With TP the emitted program all-reduces after the backward (DDP cannot wrap DTensors): all shows.
- FSDP (ZeRO 2/3): one all-gather and one reduce-scatter *per layer* (an FSDP unit each, so each pays
  its own latency). The first micro-batch's forward gathers every weight (ZeRO 3 gathers them again in
  each backward); the reduce-scatters run in the last backward. What a pass's compute cannot cover
  shows, plus the rank's first layer's gather and reduce-scatter, which nothing can hide (prefetch
  runs one layer ahead).
- AdamW's step is memory-bound: 28 bytes moved per fp32 element the rank updates.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerTerms", "DpModel", "dp_exposed", "ALLOCATOR_DIVISOR"]

ALLOCATOR_DIVISOR = 20
"""The caching allocator's fragmentation, 1/20 (5%) of activations and transient buffers, as an
integer divisor so that the solver's memory test is exact (assumption; torch's expandable segments keep
it near a few percent)."""


@dataclass(frozen=True, slots=True)
class LayerTerms:
    """One layer's share of its rank's state, end-of-step time and communication buffers."""

    state: int
    """Bytes of weights + gradients + optimizer state on one rank."""
    elems: int
    """fp32 elements the rank's optimizer updates."""
    opt: float
    """Seconds of the optimizer step for them."""
    sync: float
    """DDP: the all-reduce's per-byte seconds for its gradients (the fixed part is `DpModel.fixed`);
    FSDP: its reduce-scatter (and HSDP all-reduce) seconds, latency included."""
    gather: float
    """FSDP: its all-gather seconds, latency included; 0 for DDP."""
    comm_buffer: int
    """FSDP: bytes of communication buffers when it is the rank's largest layer; 0 for DDP."""


@dataclass(frozen=True, slots=True)
class DpModel:
    """How a strategy's data-parallel communication shows (see the module doc)."""

    kind: str
    """'none' (dp = 1), 'ddp', 'ddp_tp' (DDP with TP: reduced after the backward) or 'fsdp'."""
    micro_batches: int
    fixed: float = 0.0
    """DDP: one all-reduce's latency."""
    bucket: float = 0.0
    """DDP: the per-byte seconds of one full bucket (the last bucket is at most this)."""
    zero3: bool = False
    buffer: int = 0
    """DDP: bytes of its two buckets in flight."""


def dp_exposed(m: DpModel, sync, gather, first, fwd_window, bwd_sum, last_bwd):
    """Exposed data-parallel seconds of one rank from its layer sums (`sync`, `gather`), its first
    layer's gather + reduce-scatter (`first`), its first micro-batch's forward time over all its chunks
    (`fwd_window`), one micro-batch's backward over all its chunks (`bwd_sum`) and its last backward
    (`last_bwd`, the chunk that finishes the rank). Floats or integers in, the same kind out."""
    if m.kind == "none":
        return 0 * sync
    if m.kind == "ddp_tp":
        return m.fixed + sync
    if m.kind == "ddp":
        return max(m.fixed + sync - last_bwd, m.fixed + min(sync, m.bucket))
    bwd_comm = m.micro_batches * gather + sync if m.zero3 else sync
    return (max(0 * sync, gather - fwd_window) + max(0 * sync, bwd_comm - m.micro_batches * bwd_sum, sync - last_bwd)
            + first)
