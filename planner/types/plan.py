"""`Plan`: the chosen strategy, its estimate, the inputs that produced it, runner-ups and solver stats.

`plan.json` is its stable serialisation (keys are added, never renamed; schema 2 moved the cost-only
keys `peak_flops`, `state_bytes_per_stage` (now `held_bytes_per_pp_rank`), `chunk_times` and `links`
from the strategy block to the estimate, and schema-1 files still load). The strategy block carries
everything the emitted program needs (stage module names, mesh order and placement, TP plan, dtype,
shapes), so the program never imports `planner`. A `Plan` is data: printing and pictures live in
`planner.report`, writing the program in `planner.program`. Standard library only.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from planner.errors import PlannerError, refuse_overwrite
from planner.types.estimate import Estimate
from planner.types.strategy import Strategy

__all__ = ["Plan", "Alternative", "ModelSummary", "ClusterSummary", "SolverStats", "Layout", "WhatIf", "PLAN_SCHEMA"]

PLAN_SCHEMA = 2

PLACEMENT = "row-major: rank = index over axes, innermost fastest"


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSummary:
    """The planned model, as the report and the program need it."""

    ref: str
    """`path.py:factory` as given."""
    name: str
    params: int
    layers: int
    """Profiled layers (prefix, blocks, suffix)."""
    blocks: int
    flops_per_step: float
    """Model FLOPs (forward + backward) of one global batch."""
    tp_degrees: tuple[int, ...] = ()

    @property
    def path(self) -> str:
        return self.ref.rpartition(":")[0]

    @property
    def factory(self) -> str:
        return self.ref.rpartition(":")[2]


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterSummary:
    """The cluster planned for."""

    name: str
    gpu: str
    """The first node's device profile."""
    gpus_per_node: int
    nodes: int
    gpus: int
    node_gpus: tuple[str, ...] = ()
    """Per-node device names, only when the nodes differ."""
    device_profile: str = ""
    """Where the device numbers come from: `datasheet (profiles/gpus/NAME.toml)`, or `measured DATE by
    plan calibrate ...` for a measured profile file (one entry per distinct device, `; `-joined)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SolverStats:
    """How the search went: what `solver` in plan.json says."""

    wall_s: float
    status: str
    """OPTIMAL, FEASIBLE (a solve hit its limit), TIME_LIMIT (the search did) or INFEASIBLE."""
    gap: float
    """Largest relative gap between the plan's step time and the best bound not explored."""
    candidates: int
    pruned: int
    solved: int
    did_not_fit: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    """Skeletons skipped before pricing, by reason."""
    not_searched: dict[str, str] = field(default_factory=dict)
    """Parts of the design space left out, with the reason."""
    open: dict[str, float] = field(default_factory=dict)
    """With TIME_LIMIT: the layouts not proved slower than the plan, least bound first (at most
    `search.OPEN_SHOWN`), each with the least step time (s) it was proved to need; the first sets the gap."""
    open_total: int = 0
    """How many layouts were left open below the plan in all."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """What the program needs besides the strategy: module names per chunk, the mesh, the TP plan."""

    stages: list[list[str]]
    """Module names of each chunk, in pipeline order."""
    mesh_axes: tuple[str, ...]
    """Mesh axes, outer to inner (ranks are row-major over them)."""
    mesh_sizes: tuple[int, ...]
    tp_plan: dict[str, str]
    dtype: str
    seq_len: int
    tied: list[list[str]] = field(default_factory=list)
    blocks: str = ""
    """Dotted path of the repeated blocks' container."""
    num_blocks: int = 0

    def to_dict(self) -> dict:
        return {"stages": self.stages, "mesh": {"axes": list(self.mesh_axes), "sizes": list(self.mesh_sizes),
                                                "placement": PLACEMENT},
                "tp_plan": self.tp_plan, "dtype": self.dtype, "seq_len": self.seq_len, "tied": self.tied,
                "blocks": self.blocks, "num_blocks": self.num_blocks}

    @classmethod
    def from_dict(cls, d: dict) -> "Layout":
        return cls(stages=d["stages"], mesh_axes=tuple(d["mesh"]["axes"]), mesh_sizes=tuple(d["mesh"]["sizes"]),
                   tp_plan=d["tp_plan"], dtype=d["dtype"], seq_len=d["seq_len"], tied=d.get("tied", []),
                   blocks=d.get("blocks", ""), num_blocks=d.get("num_blocks", 0))


_LAYOUT_KEYS = ("stages", "mesh", "tp_plan", "dtype", "seq_len", "tied", "blocks", "num_blocks")
_MOVED = {"peak_flops": "peak_flops", "state_bytes_per_stage": "held_bytes_per_pp_rank",
          "chunk_times": "chunk_times", "links": "links"}
"""Schema-1 strategy keys that are estimate details in schema 2 (old name -> new name)."""


def _record(cls, d: dict):
    """A summary record from its JSON object (unknown keys from newer writers are ignored)."""
    names = {f.name for f in fields(cls)}
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
    return cls(**kept)


def _json(record) -> dict:
    """A summary record as JSON, empty optional tuples and strings left out."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(record).items() if v not in ((), "")}


def _solver_json(sv: SolverStats | None) -> dict:
    """The solver stats as JSON; the open layouts only when there are some, so that a proved plan's
    file reads as it did before they were added."""
    if sv is None:
        return {}
    return {k: v for k, v in asdict(sv).items() if v or k not in ("open", "open_total")}


@dataclass(frozen=True)
class Alternative:
    """A strategy the plan did not choose, its estimate, and why it lost."""

    strategy: Strategy
    estimate: Estimate | None
    why_not: str

    def to_dict(self) -> dict:
        return {"strategy": self.strategy.to_dict(), "estimate": self.estimate and self.estimate.to_dict(),
                "why_not": self.why_not}

    @classmethod
    def from_dict(cls, d: dict) -> "Alternative":
        est = Estimate.from_dict(d["estimate"]) if d.get("estimate") else None
        return cls(Strategy.from_dict(d["strategy"]), est, d.get("why_not", ""))


@dataclass(frozen=True, kw_only=True, slots=True)
class WhatIf:
    """The plan's step time, and the best runner-up's, when one price of the cost model is off: how far
    the ranking can be trusted."""

    case: str
    """What moved, e.g. `communication 30% slower`."""
    step_time_s: float
    runner_up: str = ""
    """The runner-up's layout label (empty when there is none)."""
    runner_up_step_time_s: float | None = None

    @property
    def winner_changes(self) -> bool:
        return self.runner_up_step_time_s is not None and self.runner_up_step_time_s < self.step_time_s


@dataclass(frozen=True)
class Plan:
    """A plan for one model on one cluster (comparable: equal inputs give equal plans)."""

    model: ModelSummary
    cluster: ClusterSummary
    global_batch: int
    strategy: Strategy
    estimate: Estimate
    layout: Layout
    runner_ups: tuple[Alternative, ...] = ()
    solver: SolverStats | None = None
    explanation: str = ""
    comparison: Alternative | None = None
    """A layout the user asked to compare against (e.g. the hand-tuned one), priced by the same model."""
    what_if: tuple[WhatIf, ...] = ()
    """The plan and the best runner-up re-priced with communication 30% slower and GEMMs 10% slower."""

    @property
    def on_cpu(self) -> bool:
        """Planned for CPU processes (gloo), not GPUs."""
        return self.cluster.gpu == "cpu"

    def node_shape(self) -> tuple[int, int]:
        """(nodes, ranks per node) the plan's ranks occupy."""
        world = self.strategy.world
        per_node = min(world, self.cluster.gpus_per_node or world)
        return max(1, world // per_node), per_node

    def summary(self) -> str:
        """One line, e.g. `tp8-pp64-dp6 mbs1x512 1f1b zero0 full: 98.9 s/step, 41.0% MFU`."""
        e = self.estimate
        return f"{self.strategy.label()}: {e.step_time_s:.3g} s/step, {e.tokens_per_s:,.0f} tokens/s, {e.mfu:.1%} MFU"

    def to_dict(self) -> dict:
        out = {"schema": PLAN_SCHEMA, "model": _json(self.model), "cluster": _json(self.cluster),
               "global_batch": self.global_batch, "strategy": {**self.strategy.to_dict(), **self.layout.to_dict()},
               "estimate": self.estimate.to_dict(), "runner_ups": [r.to_dict() for r in self.runner_ups],
               "solver": _solver_json(self.solver), "explanation": self.explanation}
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_dict()
        out["what_if"] = [{**asdict(w), "winner_changes": w.winner_changes} for w in self.what_if]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        schema = d.get("schema")
        if not isinstance(schema, int):
            raise PlannerError("plan.json has no integer 'schema'; it is not a plan written by this tool")
        if schema > PLAN_SCHEMA:
            raise PlannerError(f"plan.json schema {schema} is newer than this planner's {PLAN_SCHEMA}; upgrade planner")
        try:
            strat = dict(d["strategy"])
            layout = {k: strat.pop(k) for k in _LAYOUT_KEYS if k in strat}
            details = {new: strat.pop(old) for old, new in _MOVED.items() if old in strat}  # schema 1
            estimate = Estimate.from_dict({**d["estimate"], **details})
            return cls(model=_record(ModelSummary, d["model"]), cluster=_record(ClusterSummary, d["cluster"]),
                       global_batch=d["global_batch"], strategy=Strategy.from_dict(strat), estimate=estimate,
                       layout=Layout.from_dict(layout),
                       runner_ups=tuple(Alternative.from_dict(r) for r in d.get("runner_ups", [])),
                       solver=_record(SolverStats, d["solver"]) if d.get("solver") else None,
                       explanation=d.get("explanation", ""),
                       comparison=Alternative.from_dict(d["comparison"]) if d.get("comparison") else None,
                       what_if=tuple(WhatIf(**{k: v for k, v in w.items() if k != "winner_changes"})
                                     for w in d.get("what_if", [])))
        except (KeyError, TypeError, ValueError) as e:
            raise PlannerError(f"plan.json is incomplete or corrupted ({type(e).__name__}: {e}); plan again") from None

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlannerError(f"plan.json is not valid JSON (line {e.lineno}): {e.msg}; plan again") from None
        if not isinstance(data, dict):
            raise PlannerError("plan.json does not hold a JSON object; plan again")
        return cls.from_dict(data)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        path = refuse_overwrite(path, overwrite)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise PlannerError(f"no plan file at {path}")
        return cls.from_json(path.read_text())
