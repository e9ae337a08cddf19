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
- Overlap is not free: while a data-parallel collective runs beside the backward (or FSDP's gathers
  beside the forward), NCCL's kernels hold SMs and memory bandwidth the GEMMs would use
  (`dp_compute`, at the device's `comm_interference`: NCCL runs one thread block per channel on
  its own SM for the whole collective, 16-24 channels for inter-node rings on 8-NIC nodes, a sixth of
  an A100's 108 SMs, and a GEMM sized in full waves loses more than its share; the value is fitted to
  published runs by `benchmarks/calibrate_published.py`).
- FSDP2's copies run on the compute stream (`dp_compute`): after each all-gather, the gathered flat
  buffer is split into the unsharded parameters (`split_with_sizes_copy`: read and write every
  unsharded byte; the copy-in of the local shards before it moves 1/shard of that); before each
  reduce-scatter the unsharded gradients are concatenated into its input, cast to the fp32 reduce
  dtype (`_chunk_cat`: read the compute dtype, write fp32), and the reduced fp32 shard is read and
  written once more after it (torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py).
- AdamW's step is memory-bound: 28 bytes moved per fp32 element the rank updates.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerTerms", "DpModel", "dp_exposed", "dp_compute", "ALLOCATOR_DIVISOR"]

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
    sync_copy: float = 0.0
    """FSDP: seconds of FSDP2's copies around the layer's reduce-scatter (see the module doc)."""
    gather_copy: float = 0.0
    """FSDP: seconds of FSDP2's copies around one all-gather of the layer."""


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
    interference: float = 0.0
    """Compute seconds lost per second of overlapped collective (the device's `comm_interference`)."""


def dp_compute(m: DpModel, sync: float, gather: float, sync_copy: float = 0.0, gather_copy: float = 0.0) -> float:
    """Seconds of the rank's compute taken by its data-parallel work: the collectives running beside it
    (`m.interference` of their time; 0 for a CPU, whose gloo takes no SMs) — DDP's all-reduce during the
    last backward, FSDP's reduce-scatters and its gathers, once in the first forward and, with ZeRO 3,
    again in every micro-batch's backward — plus FSDP2's copies (`sync_copy` once per step,
    `gather_copy` per gather, as many gathers as above). Not for DDP under TP, whose all-reduce runs
    after the backward (it is all exposed already). Linear in the per-layer sums, so the partition
    solver adds it to each layer's end-of-step term."""
    if m.kind in ("none", "ddp_tp"):
        return 0.0
    if m.kind == "ddp":
        return m.interference * sync
    gathers = 1 + m.micro_batches if m.zero3 else 1
    return m.interference * (sync + gather * gathers) + sync_copy + gather_copy * gathers


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
