"""`upvit score`: compute channel importance on a proxy set and save it."""

from __future__ import annotations

import argparse

from ..pruner import UPPruner
from .common import (
    add_output_arguments,
    add_proxy_arguments,
    build_proxy,
    check_output_argument,
    load_model,
    needs_proxy,
    path_arg,
    score_with_arguments,
)

EXAMPLE = """example:
  upvit score --model facebook/deit-base-patch16-224 --dataset imagenet-1k --proxy-size 2000 \\
      --output deit-b.scores.safetensors
  upvit score --model ./tiny-vit --dataset ./digits --proxy-size 200 --output scores.safetensors
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="compute UP-ViTs channel importance and save it",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=path_arg, required=True, help="hub id or local folder")
    add_output_arguments(parser, "scores file to write (.safetensors)")
    add_proxy_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    check_output_argument(args.output, args.overwrite)
    model = load_model(args.model)
    pruner = UPPruner(model)
    proxy = build_proxy(args, args.model, model) if needs_proxy(args.method) else None
    scores = score_with_arguments(pruner, args, proxy)
    scores.save(args.output, overwrite=args.overwrite)
    print(f"wrote {args.method} scores of {len(scores.ffn)} layers to {args.output}")
