"""Text rendering shared by the CLI's reports: tables (rich on a terminal, plain when piped) and units."""
from __future__ import annotations

import sys
from typing import Sequence, TextIO

__all__ = ["table", "human", "gib"]

WIDTH = 100


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (powers of 1000; for FLOPs and parameter counts)."""
    for scale, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def gib(n: float) -> str:
    """Bytes as binary units, compact: '1.5 GiB', '320 MiB', '12 KiB'."""
    for scale, suffix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{int(n)} B"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None,
          title: str = "") -> None:
    """Print a table: right-aligned numbers; rich box drawing when `out` is a terminal."""
    out = out or sys.stdout
    if out.isatty():
        from rich.console import Console
        from rich.table import Table
        t = Table(title=title or None, width=min(WIDTH, Console().width))
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            t.add_row(*r)
        Console(file=out, width=WIDTH).print(t)
        return
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    if title:
        print(title, file=out)
    for r in [headers, *rows]:
        cells = [str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells).rstrip(), file=out)
