"""Parallelisation helpers for the emitted training program; depends on torch only.

This package is copied verbatim next to the emitted `train.py` (as the package `planner_runtime/`), so
it must never import `planner` (only relative imports inside it). Each `apply_*` function does one
parallelism over a `DeviceMesh`; `train.py`'s `parallelize` applies them in torchtitan's order:
pipeline split -> tensor parallel -> activation checkpointing -> FSDP -> materialise -> DDP.
`policy` is also what the planner's profiler measures with (the selective-recompute policy, the
default loss), so a profile never disagrees with the program that runs.
"""
from __future__ import annotations

from .cuda_ops import FusedOnCuda, as_on_gpu
from .data_parallel import allreduce_grads, apply_ddp, apply_fsdp, apply_recompute
from .distributed import init_distributed, pick_device
from .pipeline import attach_chunk_hooks, build_meta_parameters, set_micro_batches, split_chunk, watch_inference
from .policy import (SELECTIVE_SAVE_OPS, batch_map, collate, cosine_lr, default_loss, forward_loss, selective_context,
                     selective_policy, takes_targets, token_count, training_kwargs)
from .state import (ActivationMeter, TiedWeights, clean_name, clip_grad_norm, held_bytes, load_full, materialise,
                    named_local_params)
from .tensor_parallel import apply_tp

__all__ = ["FusedOnCuda", "as_on_gpu", "init_distributed", "pick_device", "SELECTIVE_SAVE_OPS", "selective_policy", "selective_context", "default_loss",
           "cosine_lr", "split_chunk", "attach_chunk_hooks", "set_micro_batches", "watch_inference", "build_meta_parameters", "batch_map",
           "forward_loss", "takes_targets", "token_count", "training_kwargs", "collate", "apply_tp", "apply_recompute", "apply_fsdp",
           "apply_ddp", "allreduce_grads", "materialise", "TiedWeights", "clip_grad_norm", "held_bytes",
           "ActivationMeter", "clean_name", "named_local_params", "load_full"]
