"""`upvit score`: compute channel importance on a proxy set and save it."""

from __future__ import annotations

import argparse

import torch

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
from .scale import add_scale_arguments, scale_options, scoring_processes

EXAMPLE = """example:
  upvit score --model facebook/deit-base-patch16-224 --dataset imagenet-1k --proxy-size 2000 \\
      --output deit-b.scores.safetensors
  upvit score --model ./tiny-vit --dataset ./digits --proxy-size 200 --output scores.safetensors
  accelerate launch --num_processes 8 -m upvit_hf.cli score --model facebook/deit-base-patch16-224 \
      --dataset imagenet-1k --proxy-size 2000 --checkpoint deit-b.ckpt --output deit-b.scores.safetensors
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="compute UP-ViTs channel importance and save it",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=path_arg, required=True, help="hub id or local folder")
    add_output_arguments(parser, "scores file to write (.safetensors)")
    add_proxy_arguments(parser)
    add_scale_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Loaded in float32 (the scoring dtype policy; a bf16 checkpoint is upcast) on this process's device;
    under several processes each scores its shard and the first writes the file."""
    check_output_argument(args.output, args.overwrite)
    options = scale_options(args)
    with scoring_processes() as state:
        model = load_model(args.model, dtype=torch.float32).to(state.device)
        pruner = UPPruner(model)
        proxy = build_proxy(args, args.model, model) if needs_proxy(args.method) else None
        scores = score_with_arguments(pruner, args, proxy, **options)
        if state.is_main_process:
            scores.save(args.output, overwrite=args.overwrite)
            print(f"wrote {args.method} scores of {len(scores.ffn)} layers to {args.output}")
