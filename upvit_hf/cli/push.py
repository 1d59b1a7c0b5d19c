"""`upvit push`: upload a pruned model folder with its model card to the Hub."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..hub import push_pruned_model
from .common import CLIError, path_arg

EXAMPLE = """example:
  upvit evaluate --model ./up-deit-s --output up-deit-s/eval.json
  upvit push ./up-deit-s my-org/up-deit-s --metrics up-deit-s/eval.json
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("push", help="upload a pruned model folder and its card to the Hub",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=path_arg, help="a folder written by `upvit prune` / save_pretrained")
    parser.add_argument("repo_id", help="the Hub repository, e.g. my-org/up-deit-s")
    parser.add_argument("--metrics", type=path_arg, help="JSON from `upvit evaluate`, shown in the model card")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.set_defaults(run=run)


def read_metrics(path: Path) -> dict:
    """The `metrics` object of an `upvit evaluate --output` report (or a bare JSON object of metrics)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CLIError(f"metrics file {path} is not JSON: {err}") from err
    metrics = report.get("metrics", report) if isinstance(report, dict) else report
    if not isinstance(metrics, dict):
        raise CLIError(f"metrics file {path} must hold a JSON object of metrics (as `upvit evaluate --output` "
                       f"writes), not a {type(metrics).__name__}")
    return metrics


def run(args: argparse.Namespace) -> None:
    metrics = None
    if args.metrics:
        path = Path(args.metrics)
        if not path.is_file():
            raise CLIError(f"metrics file {path} does not exist")
        metrics = read_metrics(path)
    commit = push_pruned_model(args.folder, args.repo_id, token=args.token, private=args.private, metrics=metrics)
    print(f"pushed {args.folder} to {args.repo_id} ({commit.commit_url})")
