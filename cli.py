"""The `plan` command: parses arguments and calls planner's public API, nothing more.

Exit codes: 0 success; 2 the input is wrong (one line on stderr saying what to change); 1 a bug.
"""
from __future__ import annotations

import argparse
import sys

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
    from planner.profile_report import print_profile
    prof = profile(args.model, micro_batch=args.micro_batch, dtype=args.dtype, use_cache=not args.no_cache)
    if args.json:
        print(prof.to_json())
    else:
        print_profile(prof)
    return 0


def _cluster_parser(sub) -> None:
    from planner.hardware import DEFAULT_GPU
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
    from planner.cluster import parse_gpus
    from planner.cluster_report import draw_cluster, print_cluster
    from planner.placement import place
    if args.detect:
        from planner.detect import detect
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plan", description="Automatic parallel-strategy planner for PyTorch "
                                "training: profile a model, model a cluster, plan and run the training.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _profile_parser(sub)
    _cluster_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
