"""`upvit demo`: the whole pipeline on embedded data (digits, Penn Treebank), offline, on a CPU."""

from __future__ import annotations

import argparse

from ..atomic import atomic_path
from .common import check_output_argument, path_arg, positive_int

EXAMPLE = """examples:
  upvit demo                        # about 8 minutes on 2 CPU cores; what `make demo` runs
  upvit demo --quick --output-dir /tmp/demo   # under a minute: checks the pipeline, numbers mean little
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train, UP-prune, distil and compare on embedded data (offline)",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", "--output", dest="output_dir", type=path_arg, default="demo_output",
                        help="where results and models go (written as a whole when the demo finishes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty --output-dir (only once the new results are complete)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (a pipeline check)")
    parser.add_argument("--seeds", type=int, nargs="+", help="vision seeds (default: 0 1 2; quick: 0)")
    parser.add_argument("--threads", type=positive_int,
                        help="torch threads (default: the cores the machine's load leaves)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    check_output_argument(args.output_dir, args.overwrite)
    with atomic_path(args.output_dir, directory=True, overwrite=args.overwrite) as tmp:
        run_demo(tmp, quick=args.quick, seeds=args.seeds, num_threads=args.threads)
