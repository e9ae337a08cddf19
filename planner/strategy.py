"""How to split one training step: the mesh sizes, the schedule, sharding, recompute and stage bounds.

A `Strategy` is plain data (it round-trips through JSON) with no cost attached; `cost.estimate` prices it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .runtime import parse_recompute  # one definition, shared with the emitted program
from .schedule import check as check_schedule

__all__ = ["Strategy", "ZERO_LEVELS", "parse_recompute", "recompute_name", "EXCLUDED"]

ZERO_LEVELS = (0, 2, 3)
"""0 = DDP; 2 = FSDP2 keeping parameters unsharded from forward to backward; 3 = FSDP2 resharding them
after forward."""

EXCLUDED = {
    "zero1": "ZeRO-1 (sharded optimizer state only) has no torch-native implementation that composes with "
             "TP and PP (FSDP2 always shards gradients), so the emitted program could not run it",
    "zero-bubble": "the zero-bubble schedules (ZBV, interleaved ZB, DualPipeV) give wrong gradients "
                   "with FSDP2 resharding in torch 2.13 (TORCH_NOTES) and need split backward; left out",
    "tp-prefix": "the embedding and LM head stay replicated across TP ranks: the emitted program shards "
                 "only the repeated blocks' projections",
    "cp": "context parallel is not emitted yet, so it is not searched",
}
"""Parts of the design space the search leaves out, with the reason the output can show."""

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
    mesh: tuple[str, ...] = ("pp", "dp", "tp")
    """Mesh axes outer to inner (ranks are row-major over them, so the innermost stays in a node)."""

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

    def label(self) -> str:
        """A short one-line name, e.g. `tp8-pp64-dp6 mbs1x512 1f1b zero0 sp full`."""
        dp = f"dp{self.dp}" if self.dp_shard in (1, self.dp) else f"dp{self.dp_replicate}x{self.dp_shard}"
        sched = self.schedule + (f"v{self.vpp}" if self.vpp > 1 else "")
        rc = sorted(set(self.recompute))
        rec = rc[0] if len(rc) == 1 else "mixed-recompute"
        return (f"tp{self.tp}-pp{self.pp}-{dp} mbs{self.micro_batch_size}x{self.num_micro_batches} {sched} "
                f"zero{self.zero}{' sp' if self.sequence_parallel else ''} {rec}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Strategy":
        d = dict(d)
        for key in ("recompute", "layers_per_chunk", "mesh"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
