"""The one exception type for mistakes in the user's input (the CLI turns it into exit code 2)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["PlannerError", "refuse_overwrite"]


class PlannerError(Exception):
    """A one-line message that says what is wrong with the input and what to change."""


def refuse_overwrite(path: str | Path, overwrite: bool = False) -> Path:
    """`path`, unless a file is already there and `overwrite` is not set: nothing the user had is
    overwritten without being asked (one check for plan files, device profiles, and the CLI's up-front one)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PlannerError(f"{path} exists; choose another file or pass overwrite=True")
    return path
