"""What the printed plan says about the candidates that lost or the search that found nothing: the part
of the step a runner-up loses on, and how many GPUs a model needs at least."""
from __future__ import annotations

import math

from planner.cost.memory import state_bytes
from planner.cost.model import CostModel
from planner.search.space import Constraints
from planner.types.estimate import Estimate

__all__ = ["why_not", "why_nothing", "gpus_needed"]


def why_not(a: Estimate, b: Estimate, status: str, gap: float) -> str:
    """What separates a runner-up (estimate `b`, its solve's `status` and `gap`) from the best (`a`): the
    breakdown part that grew the most; and, when it is not proved its family's best (the time limit
    stopped the family's solves first), that its figure is only the best found in that family."""
    diffs = {k: b.breakdown[k] - a.breakdown.get(k, 0.0) for k in b.breakdown}
    part = max(diffs, key=diffs.get)
    slower = b.step_time_s / a.step_time_s - 1
    why = f"{slower:+.1%}: {part.replace('_', ' ')} +{diffs[part]:.3g} s"
    if status == "TIME_LIMIT":
        why += f" (family best not proved, gap {gap:.2%})"
    return why


def why_nothing(cm: CostModel, c: Constraints, batch: int, had_candidates: bool) -> str:
    """Why the search found no plan, in one line that says what to change."""
    if not had_candidates:
        return (f"no layout of {cm.world} GPUs satisfies the fixed knobs with global batch {batch}; "
                "loosen tp=/pp=/dp=/micro_batch=/schedule= or change global_batch=")
    need = gpus_needed(cm)
    return (f"the model does not fit in {cm.usable / 2**30:.1f} GiB per GPU ({cm.memory_fraction:g} of "
            f"{cm.capacity / 2**30:.0f} GiB after the runtime reserve; --memory-fraction) under any searched layout of "
            f"{cm.world} GPUs; it needs at least {need} GPUs of this kind (or more memory per GPU)")


def gpus_needed(cm: CostModel) -> int:
    """A floor on the GPUs needed: training state fully sharded (16 B/parameter) plus one micro-batch
    of fully recomputed activations, over usable memory per GPU."""
    st = state_bytes(cm.profile.layers, cm.profile.tied, tp=1, zero=3, dp_shard=1, dtype=cm.dtype,
                     accumulating=False)
    usable = cm.usable - cm.reserve
    return max(1, math.ceil(st.total / max(usable, 1)))

