"""The cost model's fixed numbers that are neither measured per device nor fitted: each says where it
comes from."""
from __future__ import annotations

__all__ = ["RUNTIME_RESERVE", "DDP_BUCKET", "ADAM_BYTES_PER_ELEMENT", "MEMORY_FRACTION"]

RUNTIME_RESERVE = 1 << 30
"""Bytes of a GPU taken before the first tensor: CUDA context (~0.3-0.5 GiB on A100/H100), cuBLAS
workspaces and NCCL's channel buffers. An assumption, rounded up; 0 for the `cpu` device."""
DDP_BUCKET = 25 * 2**20
"""DDP's default `bucket_cap_mb` (25 MiB): the last bucket's all-reduce cannot hide behind backward."""
ADAM_BYTES_PER_ELEMENT = 28 + 12
"""AdamW reads weight, gradient and two moments (16 B) and writes weight and moments (12 B) per fp32
element, in one fused kernel (the emitted program's `fused=True` on GPUs, Megatron-LM's and
torchtitan's fused Adam); clipping the gradients by their global norm reads each gradient once for the
norm and again to scale it, which it writes (12 B), as the program and Megatron-LM both do before the
step. A memory-bound step."""

MEMORY_FRACTION = 0.9
"""Share of each GPU's memory (after the runtime reserve) a plan may fill. A choice from practice, not a
measurement: the memory model predicts the steady state, and what it leaves out (allocator
fragmentation beyond its share, NCCL and cuBLAS workspaces that grow with the communicators and
streams, the first step's autotuning, variable-length batches) is what fails a run planned at 100%.
`--memory-fraction` sets it (1.0 = the whole device)."""
