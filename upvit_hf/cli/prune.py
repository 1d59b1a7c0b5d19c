"""`upvit prune`: cut a model to target widths (and/or depth) and save a stock model folder."""

from __future__ import annotations

import argparse

from ..atomic import atomic_path
from ..evaluation.complexity import model_stats
from ..model_card import write_model_card
from ..pruner import UPPruner
from ..scores import ImportanceScores
from .common import (
    CLIError,
    add_proxy_arguments,
    add_target_arguments,
    build_proxy,
    load_model,
    load_preprocessor,
    modality,
    target_from_arguments,
)

EXAMPLE = """examples:
  upvit prune --model facebook/deit-base-patch16-224 --scores deit-b.scores.safetensors \\
      --hidden-size 384 --num-heads 6 --intermediate-size 1536 --output up-deit-s
  upvit prune --model ./tiny-gpt2 --dataset ./ptb.txt --proxy-size 64 --seq-len 128 --ratio 0.5 --output ./half
  upvit prune --model ./tiny-vit --dataset ./digits --num-layers 3 --output ./shallow
  upvit prune --model ./tiny-vit --dataset ./digits --ratio 0.75 --reconstruct --proxy-size 512 --output ./recon
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("prune", help="prune to target widths/depth and save a stock model",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="hub id or local folder")
    parser.add_argument("--output", required=True, help="folder for the pruned model (written atomically)")
    parser.add_argument("--scores", help="scores file from `upvit score` (otherwise scored on the fly)")
    parser.add_argument("--num-layers", type=int, help="also remove blocks progressively down to this depth")
    parser.add_argument("--reconstruct", action="store_true",
                        help="after each cut (width, and every removed block with --num-layers), refit the output "
                             "projections of the affected blocks by least squares on the proxy set (seconds; "
                             "better quality before fine-tuning)")
    add_target_arguments(parser)
    add_proxy_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    model = load_model(args.model)
    target = target_from_arguments(args, model.config)
    if target is None and args.num_layers is None:
        raise CLIError("nothing to do: give target widths (--hidden-size/--num-heads/--intermediate-size or "
                       "--ratio) and/or --num-layers")
    kind = modality(model)
    pruner = UPPruner(model)
    if target is not None:
        pruner.check_target(target)  # fail on an impossible target before any expensive work
    proxy = None
    if args.num_layers is not None or args.reconstruct or (target is not None and args.scores is None
                                                          and args.method == "kl"):
        proxy = build_proxy(args, args.model, model)
    pruned = model
    if args.num_layers is not None:
        pruned = pruner.prune_blocks(proxy, num_hidden_layers=args.num_layers, reconstruct=args.reconstruct)
        pruner = UPPruner(pruned)
    if target is not None:
        if args.scores:
            scores = ImportanceScores.load(args.scores)
        else:
            scores = pruner.score(proxy, method=args.method, variants_per_pass=args.variants_per_pass,
                                  seed=args.seed)
        pruned = pruner.prune(target, scores, reconstruct=proxy if args.reconstruct else None)
    original_stats, pruned_stats = model_stats(model), model_stats(pruned)
    with atomic_path(args.output, directory=True) as tmp:
        pruned.save_pretrained(tmp)
        load_preprocessor(args.model, kind).save_pretrained(tmp)
        write_model_card(tmp, original_stats=original_stats, pruned_stats=pruned_stats)
    print(f"saved {type(pruned).__name__} to {args.output}: params {original_stats['params']:,} -> "
          f"{pruned_stats['params']:,}, FLOPs {original_stats['flops']:,} -> {pruned_stats['flops']:,}")
