"""What a person reads: the printed plan, profile, cluster and scaling tables, pictures, progress.

Everything here reads records (`Plan`, `ModelProfile`, a `Cluster` and its `Mesh`) and prints or draws
them; nothing here plans or prices.
"""
from __future__ import annotations

from planner.report.cluster import draw_cluster, print_cluster
from planner.report.pictures import draw_memory, draw_timeline
from planner.report.plan import explain, print_plan, run_hint
from planner.report.profile import print_profile
from planner.report.progress import Progress
from planner.report.run import print_run, read_metrics
from planner.report.scaling import draw_scaling, print_scaling

__all__ = ["explain", "print_plan", "run_hint", "print_profile", "print_cluster", "draw_cluster", "draw_timeline",
           "draw_memory", "print_scaling", "draw_scaling", "Progress", "print_run", "read_metrics"]
