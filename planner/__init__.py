"""planner: an automatic parallel-strategy planner for PyTorch training.

A model file and a cluster go in; a plan that is optimal under an honest cost model, and a
torch.distributed program that executes it, come out. See README.md and ../shared/DESIGN.md.
"""
from __future__ import annotations

from .api import profile
from .errors import PlannerError
from .model_source import ModelSource, load
from .plan_types import Plan
from .planning import plan
from .profile_types import LayerProfile, ModelProfile

__all__ = ["plan", "Plan", "profile", "load", "ModelSource", "ModelProfile", "LayerProfile", "PlannerError"]
__version__ = "0.1.0"
