"""`plan profile`: the per-layer table and totals of a `ModelProfile`."""
from __future__ import annotations

import sys
from itertools import groupby
from typing import TextIO

from planner.types.profile import LayerProfile, ModelProfile
from planner.report.text import gib, human, table

__all__ = ["print_profile"]


def _runs(layers: tuple[LayerProfile, ...]) -> list[tuple[str, LayerProfile, int]]:
    """Collapse consecutive identical blocks into one row: ('blocks.0-95', layer, 96)."""
    rows = []
    for _, group in groupby(layers, key=lambda l: (l.kind, l.signature)):
        group = list(group)
        name = group[0].name if len(group) == 1 else f"{group[0].name}-{group[-1].name.rpartition('.')[2]}"
        rows.append((name, group[0], len(group)))
    return rows


def print_profile(p: ModelProfile, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    flops = p.fwd_flops + p.bwd_flops
    print(f"model   {p.ref}  ({p.model_name})", file=out)
    print(f"params  {human(p.params)}  ({p.params:,})" + (f", tied: {'; '.join(' = '.join(g) for g in p.tied)}"
                                                          if p.tied else ""), file=out)
    print(f"batch   micro-batch {p.micro_batch} x sequence {p.seq_len}, {p.dtype}; "
          f"forward+backward {human(flops, 'FLOP')} per micro-batch", file=out)
    nblocks = len(p.blocks)
    print(f"blocks  {nblocks} x {p.blocks_path or '-'}" + ("" if nblocks else " (no repeated blocks: "
          "no pipeline parallelism)"), file=out)
    print(f"TP      degrees {', '.join(map(str, p.tp_degrees))} ({p.tp_note})", file=out)
    rows = []
    for name, l, n in _runs(p.layers):
        tp = l.saved_bytes("none", "tp") / max(1, l.saved_bytes("none"))
        rows.append([f"{name}" + (f" (x{n})" if n > 1 else ""), human(l.params), human(l.fwd_flops),
                     human(l.bwd_flops), gib(l.saved_bytes("none")), gib(l.saved_bytes("selective")),
                     gib(l.saved_bytes("full")), f"{tp:.0%}", gib(l.output_bytes)])
    rows.append(["total", human(sum(l.params for l in p.layers)), human(p.fwd_flops), human(p.bwd_flops),
                 *(gib(sum(l.saved_bytes(m) for l in p.layers)) for m in ("none", "selective", "full")),
                 "", ""])
    print(file=out)
    table(["layer", "params", "fwd FLOP", "bwd FLOP", "saved none", "selective", "full", "TP-split",
           "out"], rows, out=out, title="per layer, per micro-batch (saved = activations kept for backward)")
