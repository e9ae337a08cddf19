"""The `plan` command: parses arguments and calls planner's public API and its report, nothing more.

Exit codes: 0 success; 2 the input is wrong (one line on stderr saying what to change); 1 a bug. The
library's errors name its parameters (`tp=3`); `flags()` turns them into this command's flags.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

import planner
from planner import PlannerError
from planner import report
from planner.api import DEFAULT_GPU, DTYPES, cluster_mesh

__all__ = ["main"]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default once: the help's own "(default: ...)" when it has one."""

    def _get_help_string(self, action):
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _profile_parser(sub) -> None:
    p = sub.add_parser("profile", help="profile a model's FLOPs and memory per layer (no weights allocated)",
                       formatter_class=_Help)
    p.add_argument("model", metavar="MODEL[:factory]", help="model file and factory (default factory: model)")
    p.add_argument("--micro-batch", type=_positive, default=1, help="samples per micro-batch")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="parameter and activation dtype")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--no-cache", action="store_true", help="profile again even if a cached profile exists")
    p.set_defaults(run=_run_profile)


def _run_profile(args) -> int:
    prof = planner.profile(args.model, micro_batch=args.micro_batch, dtype=args.dtype, use_cache=not args.no_cache)
    if args.json:
        print(prof.to_json())
    else:
        report.print_profile(prof)
    return 0


def _cluster_parser(sub) -> None:
    p = sub.add_parser("cluster", help="show a cluster: nodes, links, and the links each mesh axis uses",
                       formatter_class=_Help)
    p.add_argument("--gpus", default="8", help="GPUSxNODES (8x6 = 8 GPUs per node, 6 nodes), GPUS, or a "
                   "cluster .toml file; a comma list shows several")
    p.add_argument("--gpu", default=DEFAULT_GPU, help="device profile for the GPUSxNODES shorthand")
    p.add_argument("--tp", type=_positive, default=None, help="tensor-parallel size of the mesh to show "
                   "(default: GPUs per node)")
    p.add_argument("--pp", type=_positive, default=1, help="pipeline-parallel size of the mesh to show")
    p.add_argument("--draw", metavar="FILE", default=None, help="draw the topology to FILE (.png or .svg)")
    p.add_argument("--detect", action="store_true", help="read the local machine's GPUs and links (needs CUDA)")
    p.set_defaults(run=_run_cluster)


def _run_cluster(args) -> int:
    if args.detect:
        print(planner.api.detect())
        return 0
    for cluster in planner.clusters(args.gpus, args.gpu):
        report.print_cluster(cluster, cluster_mesh(cluster, args.tp, args.pp))
        if args.draw:
            report.draw_cluster(cluster, args.draw)
            print(f"drew {args.draw}")
    return 0


def _plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="plan MODEL on a cluster (the default command: `plan MODEL --gpus 8x6`)",
                       formatter_class=_Help)
    p.add_argument("model", metavar="MODEL[:factory]", help="model file and factory (default factory: model)")
    p.add_argument("--gpus", required=True, help="GPUSxNODES (8x6 = 8 GPUs per node, 6 nodes), GPUS, or a "
                   "cluster .toml file")
    p.add_argument("--gpu", default=DEFAULT_GPU, help="device profile for the GPUSxNODES shorthand")
    p.add_argument("--global-batch", type=_positive, default=None, help="samples per step (default: 8 per GPU)")
    p.add_argument("--time-limit", type=float, default=60.0, help="work limit of the search, in units of about a second (counted, not timed: the same "
                   "plan under load; see planner/search/budget.py)")
    p.add_argument("--memory-fraction", type=float, default=None,
                   help="share of each GPU's memory after the runtime reserve a plan may fill (default: 0.9)")
    for knob in ("tp", "pp", "dp", "vpp", "dp-shard"):
        p.add_argument(f"--{knob}", type=_positive, default=None, help=f"fix {knob} (default: searched)")
    p.add_argument("--micro-batch", type=_positive, default=None, help="fix the micro-batch size (default: searched)")
    p.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved"), default=None,
                   help="fix the schedule (default: searched)")
    p.add_argument("--zero", type=int, choices=(0, 2, 3), default=None, help="fix the sharding level (default: searched)")
    p.add_argument("--recompute", choices=("none", "selective", "full"), default=None,
                   help="fix activation recomputation for every block (default: chosen per stage)")
    p.add_argument("--sequence-parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="fix sequence parallel on or off (default: searched)")
    p.add_argument("--tp-across-nodes", action="store_true", help="let TP groups span nodes")
    p.add_argument("--compare", metavar="LAYOUT", default=None,
                   help="also price a fixed layout, e.g. tp8-pp64-dp6-mbs1-1f1b, and show what separates it")
    p.add_argument("--json", action="store_true", help="print plan.json on stdout instead of the report")
    p.add_argument("--out", metavar="FILE", default=None, help="write plan.json to FILE")
    p.add_argument("--emit", metavar="DIR", default=None,
                   help="write the training program (train.py, launch.sh, slurm.sbatch, ...) into DIR")
    p.add_argument("--force", action="store_true", help="overwrite --out, and a non-empty --emit DIR")
    p.add_argument("--quiet", action="store_true", help="print only the one-line summary")
    p.add_argument("--timeline", metavar="FILE", default=None,
                   help="draw the pipeline schedule (one row per stage) to FILE (.png or .svg)")
    p.add_argument("--memory", metavar="FILE", default=None,
                   help="draw memory per stage by kind against capacity to FILE (.png or .svg)")
    p.add_argument("--scaling", metavar="FILE", default=None,
                   help="with --gpus A,B,...: plot tokens/s and MFU against GPUs to FILE")
    p.set_defaults(run=_run_plan)


def _run_plan(args) -> int:
    knobs = {"tp": args.tp, "pp": args.pp, "dp": args.dp, "vpp": args.vpp, "dp_shard": args.dp_shard,
             "micro_batch": args.micro_batch, "schedule": args.schedule, "zero": args.zero,
             "recompute": args.recompute, "sequence_parallel": args.sequence_parallel}
    if args.memory_fraction is not None:
        knobs["memory_fraction"] = args.memory_fraction
    if args.out:
        planner.api.check_output(args.out, args.force)  # before the search, not after it
    if args.emit:
        planner.api.check_emit_target(args.emit, args.force)
    progress = report.Progress()
    try:
        if "," in args.gpus:  # several clusters: plan each, compare
            plans = planner.plan_many(args.model, args.gpus, args.gpu, global_batch=args.global_batch,
                              time_limit=args.time_limit, tp_across_nodes=args.tp_across_nodes, progress=progress,
                              **knobs)
        else:
            result = planner.plan(args.model, args.gpus, args.gpu, compare=args.compare, global_batch=args.global_batch,
                          time_limit=args.time_limit, tp_across_nodes=args.tp_across_nodes, progress=progress,
                          **knobs)
    finally:  # also on errors: a pending progress line must never outlive the command
        progress.done()
    if "," in args.gpus:
        return _run_scaling(args, plans)
    if args.timeline:
        report.draw_timeline(result, args.timeline)
    if args.memory:
        report.draw_memory(result, args.memory)
    if args.scaling:
        report.draw_scaling([result], args.scaling)
    if args.out:
        result.save(args.out, overwrite=args.force)
    if args.emit:
        planner.emit(result, args.emit, force=args.force)
    if args.json:
        print(result.to_json())
    elif args.quiet:
        print(result.summary())
        if result.comparison is not None:
            c = result.comparison
            print(f"compared {c.strategy.label()}: {c.why_not}")
    else:
        report.print_plan(result)
        if args.out:
            print(f"wrote {args.out}")
        if args.emit:
            print(f"wrote the training program to {args.emit}/; run it: {report.run_hint(result, args.emit)}")
    return 0


def _run_scaling(args, plans) -> int:
    """Several clusters: each one's plan in a line, then the scaling table (and plot)."""
    if args.json:
        print(json.dumps([p.to_dict() for p in plans], indent=1))
        return 0
    for p in plans:
        print(f"{p.cluster.name}: {p.summary()}")
    if not args.quiet:
        report.print_scaling(plans)
    if args.scaling:
        report.draw_scaling(plans, args.scaling)
    return 0


def _show_parser(sub) -> None:
    p = sub.add_parser("show", help="print a saved plan.json, or a program directory's plan beside what its "
                       "run measured", formatter_class=_Help)
    p.add_argument("plan", metavar="PLAN.json|RUN_DIR")
    p.set_defaults(run=_run_show)


def _run_show(args) -> int:
    from pathlib import Path
    path = Path(args.plan)
    plan = planner.Plan.load(path / "plan.json" if path.is_dir() else path)
    report.print_plan(plan)
    if path.is_dir() and (path / "metrics.jsonl").is_file():
        report.print_run(plan, report.read_metrics(path / "metrics.jsonl"))
    return 0


def _calibrate_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="measure this machine's device and links; write a device profile",
                       formatter_class=_Help)
    p.add_argument("--out", metavar="FILE", default="calibrated.toml",
                   help="device profile file to write (plan with it: --gpu FILE)")
    p.add_argument("--ranks", type=_positive, default=2, help="processes measuring at once, as in training")
    p.add_argument("--quick", action="store_true", help="fewer shapes and sizes (under a minute)")
    p.add_argument("--cpu", action="store_true", help="measure the CPU even if GPUs exist")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args) -> int:
    if sys.stderr.isatty():
        print(f"plan: calibrate: measuring with {args.ranks} rank(s) ...", file=sys.stderr, flush=True)
    path = planner.calibrate(args.out, ranks=args.ranks, quick=args.quick, cpu=args.cpu, overwrite=args.force)
    print(f"wrote {path}; plan with it: plan MODEL --gpus {args.ranks} --gpu {path}")
    return 0


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="run an emitted program locally with torchrun (one process per rank)",
                       formatter_class=_Help)
    p.add_argument("dir", metavar="DIR", help="a directory written by --emit")
    p.add_argument("--cpu", action="store_true", help="simulate the plan on CPU with gloo, one process per rank")
    p.set_defaults(run=_run_run)
    p.epilog = "Options after -- go to train.py, e.g. plan run out/ --cpu -- --steps 10"


def _run_run(args) -> int:
    return planner.run(args.dir, cpu=args.cpu, args=args.train_args)


COMMANDS = ("plan", "profile", "cluster", "show", "run", "calibrate")

FLAGS = {"tp": "--tp", "pp": "--pp", "dp": "--dp", "vpp": "--vpp", "dp_shard": "--dp-shard", "zero": "--zero",
         "micro_batch": "--micro-batch", "global_batch": "--global-batch", "schedule": "--schedule",
         "recompute": "--recompute", "time_limit": "--time-limit", "memory_fraction": "--memory-fraction", "compare": "--compare", "gpus": "--gpus",
         "gpu": "--gpu", "cpu": "--cpu", "ranks": "--ranks", "force": "--force", "overwrite": "--force", "directory": "--emit"}
"""The library's parameter names and the flags that set them."""
_PARAM = re.compile(r"\b(%s)=(True\b|(?=[\w'\".-]))?" % "|".join(sorted(FLAGS, key=len, reverse=True)))


def flags(message: str) -> str:
    """A library message in the command's words: `tp=3` -> `--tp 3`, `force=True` -> `--force`."""
    def sub(m: re.Match) -> str:
        flag = FLAGS[m.group(1)]
        if m.group(2) == "True":
            return flag
        return flag + (" " if m.group(2) is not None else "")
    return _PARAM.sub(sub, message)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`plan: error: ...`), like every other input error."""

    def error(self, message: str):
        self.exit(2, f"plan: error: {message}; see {self.prog} --help\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="plan", description="Automatic parallel-strategy planner for PyTorch "
                                "training: profile a model, model a cluster, plan and run the training.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    _plan_parser(sub)
    _profile_parser(sub)
    _cluster_parser(sub)
    _show_parser(sub)
    _run_parser(sub)
    _calibrate_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "plan")  # `plan MODEL --gpus 8x6` is `plan plan MODEL --gpus 8x6`
    train_args: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:  # `plan run DIR [--cpu] -- ARGS FOR train.py`
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1:]
    args = parser().parse_args(argv)
    args.train_args = train_args
    try:
        return args.run(args)
    except PlannerError as e:
        print(f"plan: error: {flags(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `plan ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
