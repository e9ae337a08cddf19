"""How to split one training step: the mesh sizes, the schedule, sharding, recompute and stage bounds.

A `Strategy` is plain data (it round-trips through JSON) with no cost attached; `planner.cost` prices it.
The rules every strategy must obey (torch's schedule constraints, the recompute syntax) live here too, so
the search, the cost model and the program emitter read them from one place. Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

__all__ = ["Strategy", "ZERO_LEVELS", "SCHEDULES", "check_schedule", "parse_recompute", "recompute_name", "EXCLUDED"]

SCHEDULES = ("gpipe", "1f1b", "interleaved")

ZERO_LEVELS = (0, 2, 3)
"""0 = DDP; 2 = FSDP2 keeping parameters unsharded from forward to backward; 3 = FSDP2 resharding them
after forward."""

EXCLUDED = {
    "zero1": "ZeRO-1 (sharded optimizer state only) has no torch-native implementation that composes with "
             "TP and PP (FSDP2 always shards gradients), so the emitted program could not run it",
    "zero-bubble": "the zero-bubble schedules (ZBV, interleaved ZB, DualPipeV) give wrong gradients "
                   "with FSDP2 resharding in torch 2.13 (TORCH_NOTES) and need split backward; left out",
    "replicated-vocab": "with tensor parallel the input embedding and LM head are always split along the "
                        "vocabulary (as Megatron-LM and torchtitan do) when every TP degree divides it; "
                        "keeping them replicated costs t times their weights and head GEMM, so it is not "
                        "searched",
    "loss-parallel": "the LM head's logits are gathered before the loss (any loss function works on them); "
                     "torch's loss_parallel on vocabulary-sharded logits is not emitted",
    "cp": "context parallel is not emitted yet, so it is not searched",
}
"""Parts of the design space the search leaves out, with the reason the output can show."""

def check_schedule(schedule: str, pp: int, vpp: int, n: int) -> str:
    """Why torch 2.13's schedule classes cannot run this schedule with these sizes ("" when they can)."""
    if schedule not in SCHEDULES:
        return f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}"
    if schedule == "interleaved":
        if pp < 2 or vpp < 2:
            return "interleaved 1F1B needs pp >= 2 and vpp >= 2"
        rounds = max(1, n // pp)
        if n % rounds:
            return f"interleaved 1F1B needs micro-batches ({n}) to be a multiple of max(1, n // pp) = {rounds}"
    elif vpp != 1:
        return f"{schedule} runs one stage per rank (vpp 1), not {vpp}"
    if schedule == "1f1b" and n < pp:
        return f"1F1B needs at least as many micro-batches as stages ({n} < {pp})"
    return ""


_PART = re.compile(r"^(full|selective)(?::(\d+))?$")


def parse_recompute(mode: str, blocks: int) -> tuple[int, int]:
    """(blocks under full recompute, blocks under selective) of a chunk with `blocks` blocks; the chunk's
    first blocks are the full ones, then the selective ones, the rest keep everything.

    `none`, `selective`, `full`, or parts joined by `+`: `full:K` (K blocks), `selective:J`, and a
    part without a count takes all remaining blocks (`full:2+selective` = 2 full, the rest selective)."""
    if mode == "none":
        return 0, 0
    counts = {"full": 0, "selective": 0}
    left = blocks
    for part in mode.split("+"):
        m = _PART.match(part)
        if not m or counts[m.group(1)]:
            raise ValueError(f"recompute {mode!r}: use none, selective, full, or full:K+selective:J")
        n = min(left, int(m.group(2))) if m.group(2) else left
        counts[m.group(1)] = n
        left -= n
    return counts["full"], counts["selective"]


def recompute_name(full: int, selective: int, blocks: int) -> str:
    """The canonical name of a chunk's recompute choice (inverse of `parse_recompute`)."""
    if blocks and full >= blocks:
        return "full"
    if blocks and selective >= blocks:
        return "selective"
    parts = []
    if full:
        parts.append(f"full:{full}")
    if selective:
        parts.append("selective" if full + selective == blocks else f"selective:{selective}")
    return "+".join(parts) or "none"


@dataclass(frozen=True, kw_only=True, slots=True)
class Strategy:
    """One point of the search space."""

    dp: int
    """Data-parallel degree (replicate x shard)."""
    tp: int
    pp: int
    vpp: int = 1
    """Model chunks (virtual stages) per pipeline rank."""
    dp_shard: int = 1
    """FSDP shard group size: dp for plain FSDP, < dp for HSDP, 1 with DDP."""
    micro_batch_size: int = 1
    num_micro_batches: int = 1
    schedule: str = "1f1b"
    zero: int = 0
    sequence_parallel: bool = False
    recompute: tuple[str, ...] = ("none",)
    """One entry per model chunk (pp x vpp), see `parse_recompute`."""
    layers_per_chunk: tuple[int, ...] = ()
    """Profiled layers (prefix, blocks, suffix) in each chunk, in pipeline order."""

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp", "vpp", "dp_shard", "micro_batch_size", "num_micro_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.zero not in ZERO_LEVELS:
            raise ValueError(f"zero {self.zero} is not one of {ZERO_LEVELS} ({EXCLUDED['zero1']})")
        if self.dp % self.dp_shard:
            raise ValueError(f"dp_shard {self.dp_shard} does not divide dp {self.dp}")
        if (self.zero == 0) != (self.dp_shard == 1) and self.dp > 1:
            raise ValueError(f"zero {self.zero} with dp_shard {self.dp_shard}: DDP has dp_shard 1, FSDP > 1")
        why = check_schedule(self.schedule, self.pp, self.vpp, self.num_micro_batches)
        if why:
            raise ValueError(why)
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("sequence parallel needs tp > 1")
        chunks = self.pp * self.vpp
        if len(self.recompute) != chunks:
            raise ValueError(f"recompute has {len(self.recompute)} entries for {chunks} chunks")
        if self.layers_per_chunk and len(self.layers_per_chunk) != chunks:
            raise ValueError(f"layers_per_chunk has {len(self.layers_per_chunk)} entries for {chunks} chunks")

    @property
    def world(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def chunks(self) -> int:
        return self.pp * self.vpp

    @property
    def sharding(self) -> int:
        """The ZeRO level in effect: 0 when there is no data parallelism to shard over."""
        return self.zero if self.dp > 1 else 0

    @property
    def accumulating(self) -> bool:
        """Whether gradients accumulate over several backwards per step (pipelines always do)."""
        return self.pp > 1 or self.num_micro_batches > 1

    @property
    def dp_replicate(self) -> int:
        return self.dp // self.dp_shard

    def sizes(self) -> dict[str, int]:
        """Mesh axis sizes by name (HSDP splits dp into dp_replicate x dp_shard)."""
        out = {"pp": self.pp, "tp": self.tp}
        if self.zero and 1 < self.dp_shard < self.dp:
            out |= {"dp_replicate": self.dp_replicate, "dp_shard": self.dp_shard}
        else:
            out["dp"] = self.dp
        return out

    def label(self, recompute: bool = True) -> str:
        """A short one-line name, e.g. `tp8-pp64-dp6 mbs1x512 1f1b zero0 sp full`; without `recompute`,
        the layout alone (a candidate not solved yet has no recompute of its own)."""
        dp = f"dp{self.dp}" if self.dp_shard in (1, self.dp) else f"dp{self.dp_replicate}x{self.dp_shard}"
        sched = self.schedule + (f"v{self.vpp}" if self.vpp > 1 else "")
        rc = sorted(set(self.recompute))
        rec = (" " + rc[0] if len(rc) == 1 else " mixed-recompute") if recompute else ""
        return (f"tp{self.tp}-pp{self.pp}-{dp} mbs{self.micro_batch_size}x{self.num_micro_batches} {sched} "
                f"zero{self.zero}{' sp' if self.sequence_parallel else ''}{rec}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Strategy":
        d = dict(d)
        d.pop("mesh", None)  # plan.json schema 1 wrote the (unused) axis order here
        for key in ("recompute", "layers_per_chunk"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
