"""planner: an automatic parallel-strategy planner for PyTorch training.

A model file and a cluster go in; a plan that is optimal under an honest cost model, and a
torch.distributed program that executes it, come out. See README.md and ARCHITECTURE.md.
Printing and pictures of a plan: `planner.report`.
"""
from __future__ import annotations

from planner.api import calibrate, clusters, emit, execute, plan, plan_many, profile, run
from planner.cluster.graph import Cluster
from planner.errors import PlannerError
from planner import report
from planner.load.model_file import ModelSource, load
from planner.types.plan import Plan
from planner.types.profile import LayerProfile, ModelProfile

__all__ = ["plan", "plan_many", "profile", "load", "clusters", "emit", "execute", "run", "calibrate", "Cluster", "Plan", "ModelSource",
           "ModelProfile", "LayerProfile", "PlannerError", "report"]
__version__ = "0.1.0"
