"""The one exception type for mistakes in the user's input (the CLI turns it into exit code 2)."""
from __future__ import annotations

__all__ = ["PlannerError"]


class PlannerError(Exception):
    """A one-line message that says what is wrong with the input and what to change."""
