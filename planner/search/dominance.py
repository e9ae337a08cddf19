"""Dominance between candidates: a variant that is no faster and needs no less memory than another is
never worth solving (the issue's "a variant that is no faster and uses no less memory than another is
never solved").

`dominates(a, b)` compares two partition problems term by term. The step time is a longest path over
the chunk times and sends plus, per rank, the optimizer step and the exposed data-parallel time
(`terms.dp_exposed`), which grows with the layers' reduce-scatter and gather times, DDP's latency and
bucket, and ZeRO 3's gathers in the backward; it falls as compute grows, so compute must be equal. Peak
memory grows with every byte term and must stay under the cap. So where compute is equal and every other
term of `b` is at least `a`'s (and `b`'s cap at most `a`'s), every assignment that fits `b` fits `a`, no
slower: `b`'s best is never below `a`'s, and the search loses nothing by skipping `b` (its bounds and
its table entry are `a`'s or above). Found among a candidate's variants in sharding level only (ZeRO 3
against ZeRO 2 under a pipeline, where both keep the same weights: 400 of GPT-3 175B's 1,246 pipeline
candidates on 8x16, 1,996 of GPT 1T's 4,570 on 8x384, 1,207 of Llama 3 405B's 2,523 on 8x2048).
Like the rest of the search, it holds for the problems in the solver's integer units (`pricing.problem`).
"""
from __future__ import annotations

from planner.search.partition import Problem

__all__ = ["dominates"]

SAME = ("pp", "vpp", "micro_batches", "schedule", "is_block", "recompute", "fixed_bounds", "totals", "fwd", "bwd")
"""What must be equal: the schedule, the layers and their compute."""
AT_LEAST = ("send", "act", "transient", "static", "out", "comm_buffer", "opt", "sync", "gather")
"""What the dominated problem may only have more of: sends, bytes and end-of-step terms."""


def dominates(a: Problem, b: Problem) -> bool:
    """True when every assignment fits `a` if it fits `b`, with a step under `a` no longer than under `b`."""
    if any(getattr(a, k) != getattr(b, k) for k in SAME):
        return False
    da, db = a.dp, b.dp
    if (da.kind, da.micro_batches) != (db.kind, db.micro_batches):
        return False
    if db.fixed < da.fixed or db.bucket < da.bucket or db.zero3 < da.zero3:
        return False
    return all(_at_least(getattr(b, k), getattr(a, k)) for k in AT_LEAST) and _at_least(a.cap, b.cap)


def _at_least(x, y) -> bool:
    """x >= y term by term (tuples nested to any depth)."""
    if isinstance(x, tuple):
        return len(x) == len(y) and all(_at_least(u, v) for u, v in zip(x, y))
    return x >= y
