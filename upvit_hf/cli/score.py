"""`upvit score`: compute channel importance on a proxy set and save it."""

from __future__ import annotations

import argparse

from ..pruner import UPPruner
from .common import add_proxy_arguments, build_proxy, load_model, needs_proxy, score_with_arguments

EXAMPLE = """example:
  upvit score --model facebook/deit-base-patch16-224 --dataset imagenet-1k --proxy-size 2000 \\
      --output deit-b.scores.safetensors
  upvit score --model ./tiny-vit --dataset ./digits --proxy-size 200 --output scores.safetensors
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="compute UP-ViTs channel importance and save it",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local folder")
    parser.add_argument("--output", required=True, help="scores file to write (.safetensors)")
    add_proxy_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    pruner = UPPruner(model)
    proxy = build_proxy(args, args.model, model) if needs_proxy(args.method) else None
    scores = score_with_arguments(pruner, args, proxy)
    scores.save(args.output)
    print(f"wrote {args.method} scores of {len(scores.ffn)} layers to {args.output}")
