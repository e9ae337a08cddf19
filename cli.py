"""The `plan` command: parses arguments and calls planner's public API, nothing more.

Exit codes: 0 success; 2 the input is wrong (one line on stderr saying what to change); 1 a bug.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from planner.errors import PlannerError

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _profile_parser(sub) -> None:
    from planner.api import DTYPES
    p = sub.add_parser("profile", help="profile a model's FLOPs and memory per layer (no weights allocated)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", metavar="MODEL[:factory]", help="model file and factory (default factory: model)")
    p.add_argument("--micro-batch", type=_positive, default=1, help="samples per micro-batch")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="parameter and activation dtype")
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--no-cache", action="store_true", help="profile again even if a cached profile exists")
    p.set_defaults(run=_run_profile)


def _run_profile(args) -> int:
    from planner.api import profile
    from planner.report.profile import print_profile
    prof = profile(args.model, micro_batch=args.micro_batch, dtype=args.dtype, use_cache=not args.no_cache)
    if args.json:
        print(prof.to_json())
    else:
        print_profile(prof)
    return 0


def _cluster_parser(sub) -> None:
    from planner.cluster.hardware import DEFAULT_GPU
    p = sub.add_parser("cluster", help="show a cluster: nodes, links, and the links each mesh axis uses",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    from planner.cluster.graph import parse_gpus
    from planner.report.cluster import draw_cluster, print_cluster
    from planner.cluster.placement import place
    if args.detect:
        from planner.cluster.detect import detect
        print(detect())
        return 0
    for cluster in parse_gpus(args.gpus, args.gpu):
        tp = args.tp or cluster.gpus_per_node
        rest = cluster.num_gpus // (tp * args.pp)
        if rest * tp * args.pp != cluster.num_gpus:
            raise PlannerError(f"--tp {tp} x --pp {args.pp} does not divide the {cluster.num_gpus} GPUs of "
                               f"{cluster.name}")
        print_cluster(cluster, place(cluster, {"pp": args.pp, "dp": rest, "tp": tp}))
        if args.draw:
            draw_cluster(cluster, args.draw)
            print(f"drew {args.draw}")
    return 0


def _plan_parser(sub) -> None:
    from planner.cluster.hardware import DEFAULT_GPU
    p = sub.add_parser("plan", help="plan MODEL on a cluster (the default command: `plan MODEL --gpus 8x6`)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", metavar="MODEL[:factory]", help="model file and factory (default factory: model)")
    p.add_argument("--gpus", required=True, help="GPUSxNODES (8x6 = 8 GPUs per node, 6 nodes), GPUS, or a "
                   "cluster .toml file")
    p.add_argument("--gpu", default=DEFAULT_GPU, help="device profile for the GPUSxNODES shorthand")
    p.add_argument("--global-batch", type=_positive, default=None, help="samples per step (default: 8 per GPU)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds for the search")
    for knob in ("tp", "pp", "dp", "vpp", "dp-shard"):
        p.add_argument(f"--{knob}", type=_positive, default=None, help=f"fix {knob} (default: searched)")
    p.add_argument("--micro-batch", type=_positive, default=None, help="fix the micro-batch size")
    p.add_argument("--schedule", choices=("gpipe", "1f1b", "interleaved"), default=None, help="fix the schedule")
    p.add_argument("--zero", type=int, choices=(0, 2, 3), default=None, help="fix the sharding level")
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


class _Progress:
    """Progress on a terminal's stderr, shown only once the work has taken over a second, as one line
    rewritten in place and erased at the end (so an error that follows is still one line). Piped or
    logged output gets none."""

    def __init__(self, tty: bool | None = None):
        self.t0, self.last = time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.searching = False
        # profiling reports no steps: say which phase runs if it takes over a second
        self.timer = threading.Timer(1.0, self._profiling)
        self.timer.daemon = True
        if self.tty:
            self.timer.start()

    def _profiling(self) -> None:
        if not self.searching:
            self.last = time.perf_counter()
            print("\rplan: profile: measuring the model's layers", end="", file=sys.stderr, flush=True)

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.searching = True
        now = time.perf_counter()
        if not self.tty or now - self.t0 < 1.0 or now - self.last < 0.2:
            return
        self.last = now
        print(f"\rplan: {phase}: {done:,}/{total:,} candidates, {now - self.t0:.0f} s   ", end="", file=sys.stderr,
              flush=True)

    def done(self) -> None:
        self.timer.cancel()
        if self.tty and self.last:
            print("\r" + " " * 70 + "\r", end="", file=sys.stderr, flush=True)


def _run_plan(args) -> int:
    from planner.search.planning import plan, plan_many
    knobs = {"tp": args.tp, "pp": args.pp, "dp": args.dp, "vpp": args.vpp, "dp_shard": args.dp_shard,
             "micro_batch": args.micro_batch, "schedule": args.schedule, "zero": args.zero,
             "recompute": args.recompute, "sequence_parallel": args.sequence_parallel}
    progress = _Progress()
    try:
        if "," in args.gpus:  # several clusters: plan each, compare
            plans = plan_many(args.model, args.gpus, args.gpu, global_batch=args.global_batch,
                              time_limit=args.time_limit, tp_across_nodes=args.tp_across_nodes, progress=progress,
                              **knobs)
        else:
            result = plan(args.model, args.gpus, args.gpu, compare=args.compare, global_batch=args.global_batch,
                          time_limit=args.time_limit, tp_across_nodes=args.tp_across_nodes, progress=progress,
                          **knobs)
    finally:  # also on errors: a pending progress line must never outlive the command
        progress.done()
    if "," in args.gpus:
        return _run_scaling(args, plans)
    if args.timeline:
        result.timeline(args.timeline)
    if args.memory:
        result.memory_chart(args.memory)
    if args.scaling:
        from planner.report.scaling import draw_scaling
        draw_scaling([result], args.scaling)
    if args.out:
        result.save(args.out, overwrite=args.force)
    if args.emit:
        result.emit(args.emit, force=args.force)
    if args.json:
        print(result.to_json())
    elif args.quiet:
        print(result.summary())
    else:
        from planner.report.plan import print_plan
        print_plan(result)
        if args.out:
            print(f"wrote {args.out}")
        if args.emit:
            print(f"wrote the training program to {args.emit}/ (run it: plan run {args.emit}, or bash "
                  f"{args.emit}/launch.sh)")
    return 0


def _run_scaling(args, plans) -> int:
    """Several clusters: each one's plan in a line, then the scaling table (and plot)."""
    from planner.report.scaling import draw_scaling, print_scaling
    if args.json:
        print(json.dumps([p.to_dict() for p in plans], indent=1))
        return 0
    for p in plans:
        print(f"{p.cluster['name']}: {p.summary()}")
    if not args.quiet:
        print_scaling(plans)
    if args.scaling:
        draw_scaling(plans, args.scaling)
    return 0


def _show_parser(sub) -> None:
    p = sub.add_parser("show", help="print a saved plan.json", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("plan", metavar="PLAN.json")
    p.set_defaults(run=_run_show)


def _run_show(args) -> int:
    from planner.types.plan import Plan
    from planner.report.plan import print_plan
    print_plan(Plan.load(args.plan))
    return 0


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="run an emitted program locally with torchrun (one process per rank)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a directory written by --emit")
    p.add_argument("--cpu", action="store_true", help="simulate the plan on CPU with gloo, one process per rank")
    p.set_defaults(run=_run_run)
    p.epilog = "Options after -- go to train.py, e.g. plan run out/ --cpu -- --steps 10"


def _run_run(args) -> int:
    from planner.program.execute import execute
    return execute(args.dir, cpu=args.cpu, args=args.train_args)


COMMANDS = ("plan", "profile", "cluster", "show", "run")


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
        print(f"plan: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `plan ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
