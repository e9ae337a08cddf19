"""On-disk cache of profiles, keyed by the model actually built, the file's content and the shapes.

Profiling is deterministic, so a profile is reused whenever the same file builds the same model
(`load.fingerprint`: module tree, parameter shapes and dtypes, class sources, batch shapes) with the same
factory, micro-batch, dtype and profiler version. The file's bytes alone are not the key: a file that
reads its depth from the environment builds different models from the same bytes. Location: `$PLANNER_CACHE_DIR`, else `$XDG_CACHE_HOME/planner`, else
`~/.cache/planner`. A corrupt or unreadable entry is ignored and rewritten.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from planner.types.profile import SCHEMA, ModelProfile

__all__ = ["cache_dir", "profile_key", "load_cached", "store"]

_CODE = ("profiling/profiler.py", "profiling/recorder.py", "profiling/blocks.py", "program/runtime/cuda_ops.py", "types/profile.py",
         "program/runtime/policy.py", "load/structure.py",
         "load/model_file.py", "load/fingerprint.py")
"""The sources a profile depends on, relative to the package root: each path and its bytes go into the
key, so editing or moving one of them gives new keys (a missing one is an error, never skipped)."""


def cache_dir() -> Path:
    if os.environ.get("PLANNER_CACHE_DIR"):
        return Path(os.environ["PLANNER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "planner"


def profile_key(file_sha256: str, built: str, factory: str, micro_batch: int, dtype: str) -> str:
    """Content hash of everything a profile depends on (`built`: the model's fingerprint), the
    profiler's own source included."""
    h = hashlib.sha256(f"{SCHEMA}|{file_sha256}|{built}|{factory}|{micro_batch}|{dtype}".encode())
    root = Path(__file__).resolve().parents[1]
    for name in _CODE:
        h.update(name.encode() + b"\0" + (root / name).read_bytes())
    return h.hexdigest()[:24]


def load_cached(key: str) -> ModelProfile | None:
    path = cache_dir() / "profiles" / f"{key}.json"
    try:
        return ModelProfile.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None


def store(key: str, profile: ModelProfile) -> None:
    """Write atomically (temp file, then rename) so a concurrent reader never sees half a profile."""
    folder = cache_dir() / "profiles"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(profile.to_json())
        os.replace(tmp, folder / f"{key}.json")
    except OSError:
        pass  # a read-only home only costs a re-profile next time
