"""A matplotlib figure without a display, and saving it as PNG or SVG by the file's suffix."""
from __future__ import annotations

from pathlib import Path

__all__ = ["figure", "save"]


def figure(width: float, height: float):
    """(pyplot, (figure, axes)) on the Agg backend, so drawing works on a headless machine."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt, plt.subplots(figsize=(width, height))


def save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, format="svg" if path.suffix.lower() == ".svg" else "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
