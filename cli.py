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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plan", description="Automatic parallel-strategy planner for PyTorch "
                                "training: profile a model, model a cluster, plan and run the training.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _profile_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except PlannerError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("plan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
