"""The public functions behind `planner.profile(...)` and the CLI."""
from __future__ import annotations

from planner.profiling.cache import load_cached, profile_key, store
from planner.errors import PlannerError
from planner.load.model_file import ModelSource, load
from planner.profiling.profiler import profile_model
from planner.types.profile import ModelProfile

__all__ = ["profile", "DTYPES"]

DTYPES = ("bfloat16", "float16", "float32")


def profile(model: str | ModelSource, micro_batch: int = 1, dtype: str = "bfloat16",
            use_cache: bool = True) -> ModelProfile:
    """Profile `path.py[:factory]` (or a loaded source) per layer, reusing a cached profile if any."""
    if micro_batch < 1:
        raise PlannerError(f"--micro-batch {micro_batch}: must be a positive number of samples")
    if dtype not in DTYPES:
        raise PlannerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    source = load(model) if isinstance(model, str) else model
    key = profile_key(source.file_sha256, source.factory, micro_batch, dtype)
    cached = load_cached(key) if use_cache else None
    if cached is not None and cached.ref == source.ref:
        return cached
    result = profile_model(source, micro_batch=micro_batch, dtype=dtype)
    store(key, result)
    return result
