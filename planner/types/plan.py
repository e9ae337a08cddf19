"""`Plan`: the chosen strategy, its estimate, the inputs that produced it, runner-ups and solver stats.

`plan.json` is its stable serialisation (schema below; keys are added, never renamed). The strategy
block carries everything the emitted program needs (stage module names, mesh order and placement,
TP plan, dtype, shapes), so the program never imports `planner`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from planner.cost.model import Estimate
from planner.errors import PlannerError
from planner.types.strategy import Strategy

__all__ = ["Plan", "Alternative", "PLAN_SCHEMA"]

PLAN_SCHEMA = 1

_EXTRA = ("tied", "blocks", "num_blocks", "peak_flops", "state_bytes_per_stage", "chunk_times", "links")
"""Layout keys beyond DESIGN's list, kept in plan.json's strategy block (added, never renamed)."""


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


@dataclass(frozen=True)
class Plan:
    """A plan for one model on one cluster (comparable: equal inputs give equal plans)."""

    model: dict
    """ref, name, params, layers, blocks, flops_per_step, tied."""
    cluster: dict
    """gpu, gpus_per_node, nodes, gpus, name, per-node GPU names when mixed."""
    global_batch: int
    strategy: Strategy
    estimate: Estimate
    layout: dict
    """What the program needs besides the strategy: stages (module names per chunk), mesh (axis order,
    sizes, placement), tp_plan, dtype, seq_len, tied."""
    runner_ups: tuple[Alternative, ...] = ()
    solver: dict = field(default_factory=dict)
    explanation: str = ""
    comparison: Alternative | None = None
    """A layout the user asked to compare against (e.g. the hand-tuned one), priced by the same model."""

    def summary(self) -> str:
        """One line, e.g. `tp8-pp64-dp6 mbs1x512 1f1b zero0 full: 98.9 s/step, 41.0% MFU`."""
        e = self.estimate
        return f"{self.strategy.label()}: {e.step_time_s:.3g} s/step, {e.tokens_per_s:,.0f} tokens/s, {e.mfu:.1%} MFU"

    def to_dict(self) -> dict:
        strat = self.strategy.to_dict()
        strat.update({"stages": self.layout["stages"], "mesh": self.layout["mesh"], "tp_plan": self.layout["tp_plan"],
                      "dtype": self.layout["dtype"], "seq_len": self.layout["seq_len"],
                      **{k: self.layout[k] for k in _EXTRA if k in self.layout}})
        out = {"schema": PLAN_SCHEMA, "model": self.model, "cluster": self.cluster, "global_batch": self.global_batch,
               "strategy": strat, "estimate": self.estimate.to_dict(),
               "runner_ups": [r.to_dict() for r in self.runner_ups], "solver": self.solver,
               "explanation": self.explanation}
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_dict()
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
            layout = {k: strat.pop(k) for k in ("stages", "mesh", "tp_plan", "dtype", "seq_len", *_EXTRA) if k in strat}
            return cls(model=d["model"], cluster=d["cluster"], global_batch=d["global_batch"],
                       strategy=Strategy.from_dict(strat), estimate=Estimate.from_dict(d["estimate"]),
                       layout=layout, runner_ups=tuple(Alternative.from_dict(r) for r in d.get("runner_ups", [])),
                       solver=d.get("solver", {}), explanation=d.get("explanation", ""),
                       comparison=Alternative.from_dict(d["comparison"]) if d.get("comparison") else None)
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
        path = Path(path)
        if path.exists() and not overwrite:
            raise PlannerError(f"{path} exists; choose another file or remove it")
        path.write_text(self.to_json() + "\n")
        return path

    def explain(self) -> str:
        """The full report `plan` prints: the model, cluster, plan, time and memory, runner-ups, solver."""
        import io
        from planner.report.plan import print_plan
        buf = io.StringIO()
        print_plan(self, buf)
        return buf.getvalue()

    def timeline(self, path: str | Path) -> dict:
        """Draw the pipeline schedule to `path` (PNG, or SVG by suffix); returns the drawn data."""
        from planner.report.pictures import draw_timeline
        return draw_timeline(self, path)

    def memory_chart(self, path: str | Path) -> dict:
        """Draw memory per stage by kind against capacity to `path`; returns the drawn data."""
        from planner.report.pictures import draw_memory
        return draw_memory(self, path)

    def emit(self, directory: str | Path, force: bool = False) -> Path:
        """Write the training program for this plan into `directory` (see `planner.program.emit`)."""
        from planner.program.emit import emit
        return emit(self, directory, force=force)

    def execute(self, directory: str | Path, *, cpu: bool = False, args: tuple[str, ...] = ()) -> int:
        """Run the program (emitting it into `directory` first if it is not there); the exit code."""
        from planner.program.execute import execute
        if not (Path(directory) / "train.py").is_file():
            self.emit(directory)
        return execute(directory, cpu=cpu, args=args)

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise PlannerError(f"no plan file at {path}")
        return cls.from_json(path.read_text())
