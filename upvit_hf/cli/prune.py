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
    add_output_arguments,
    add_target_arguments,
    build_proxy,
    check_output_argument,
    load_model,
    load_preprocessor,
    modality,
    needs_proxy,
    score_with_arguments,
    path_arg,
    per_stage,
    target_from_arguments,
)
from .scale import add_scale_arguments, scale_options, scoring_processes

EXAMPLE = """examples:
  upvit prune --model facebook/deit-base-patch16-224 --scores deit-b.scores.safetensors \\
      --hidden-size 384 --num-heads 6 --intermediate-size 1536 --output up-deit-s
  upvit prune --model ./tiny-gpt2 --dataset ./ptb.txt --proxy-size 64 --seq-len 128 --ratio 0.5 --output ./half
  upvit prune --model ./tiny-vit --dataset ./digits --num-layers 3 --output ./shallow
  upvit prune --model ./tiny-vit --dataset ./digits --ratio 0.75 --reconstruct --proxy-size 512 --output ./recon
  upvit prune --model ./tiny-vit --dataset ./digits --method fisher --refine-band 0.1 --ratio 0.5 --output ./half
  upvit prune --model OpenGVLab/pvt_v2_b2 --dataset imagenet-1k --hidden-size 32,64,160,256 \
      --num-heads 1,2,5,8 --intermediate-size 256,512,640,1024 --num-layers 2,2,2,2 --output ./up-pvt-v2-b0
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("prune", help="prune to target widths/depth and save a stock model",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=path_arg, required=True, help="hub id or local folder")
    add_output_arguments(parser, "folder for the pruned model (written atomically)")
    parser.add_argument("--scores", type=path_arg, help="scores file from `upvit score` (otherwise scored on the fly)")
    parser.add_argument("--force", action="store_true",
                        help="use --scores even though they record another model or other widths")
    parser.add_argument("--num-layers", type=per_stage,
                        help="also remove blocks progressively down to this depth "
                             "(hierarchical models: a total, or one per stage: 2,2,2,2)")
    parser.add_argument("--refine-band", type=float, metavar="F",
                        help="re-score with exact KL the channels ranked within ±F·width of each component's cut "
                             "(approximate scores from --scores or --method; needs --dataset)")
    parser.add_argument("--reconstruct", action="store_true",
                        help="after each cut (width, and every removed block with --num-layers), refit the output "
                             "projections of the affected blocks, then the head (or, tied to the embedding, the final "
                             "norm), by least squares on the proxy set (seconds; better quality before fine-tuning)")
    add_target_arguments(parser)
    add_proxy_arguments(parser)
    add_scale_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """The model keeps its stored dtype (the pruned one is saved in it); scoring on the fly runs in float32
    anyway (the proxy pass's dtype policy). Under several processes each scores its shard and the first
    saves the model."""
    check_output_argument(args.output, args.overwrite)
    if args.num_layers is not None and args.scores is not None:
        raise CLIError("--scores cannot be combined with --num-layers: the widths are scored on the model the "
                       "depth step leaves; drop --scores (scored on the fly) or prune depth first")
    scores = ImportanceScores.load(args.scores) if args.scores is not None else None  # unreadable: fail first
    options = scale_options(args)
    with scoring_processes() as state:
        _prune(args, scores, options, state.device, state.is_main_process)


def _prune(args: argparse.Namespace, scores: ImportanceScores | None, options: dict, device, is_main: bool) -> None:
    model = load_model(args.model).to(device)
    target = target_from_arguments(args, model.config)
    if target is None and args.num_layers is None:
        raise CLIError("nothing to do: give target widths (--hidden-size/--num-heads/--intermediate-size or "
                       "--ratio) and/or --num-layers")
    if args.refine_band is not None:
        if target is None:
            raise CLIError("--refine-band refines the cut of a width target: give --ratio or the target widths")
        if args.scores is None and args.method == "kl":
            raise CLIError("--refine-band refines approximate scores: give --scores or --method fisher/hybrid/"
                           "magnitude/random (exact kl scores need no refinement)")
        if args.refine_band < 0:
            raise CLIError(f"--refine-band must be >= 0, got {args.refine_band}")
    kind = modality(model)
    pruner = UPPruner(model)
    if target is not None:
        pruner.check_target(target)  # fail on an impossible target or foreign scores before any expensive work
    if scores is not None:
        scores.check_matches(pruner.adapter.widths)
        if not args.force:
            scores.check_origin(model, pruner.adapter.widths)
    proxy = None
    if args.num_layers is not None or args.refine_band is not None or args.reconstruct or (
            target is not None and args.scores is None and needs_proxy(args.method)):
        proxy = build_proxy(args, args.model, model)
    pruned = model
    if args.num_layers is not None:
        pruned = pruner.prune_blocks(proxy, num_hidden_layers=args.num_layers,
                                     variants_per_pass=args.variants_per_pass, reconstruct=args.reconstruct, **options)
        pruner = UPPruner(pruned)
    if target is not None:
        if scores is None:
            width_options = {k: v for k, v in options.items() if k != "checkpoint"}
            if "checkpoint" in options:  # the depth steps keep theirs at CHECKPOINT.stepK
                width_options["checkpoint"] = options["checkpoint"] + ".width"
            scores = score_with_arguments(pruner, args, proxy, **(width_options if args.method == "kl" else {}))
        if args.refine_band is not None:
            scores = pruner.refine(scores, target, proxy, band=args.refine_band,
                                   variants_per_pass=args.variants_per_pass)
        pruned = pruner.prune(target, scores, force=args.force,
                              reconstruct=proxy if args.reconstruct else None)
    if not is_main:
        return
    original_stats, pruned_stats = model_stats(model), model_stats(pruned)
    with atomic_path(args.output, directory=True, overwrite=args.overwrite) as tmp:
        pruned.save_pretrained(tmp)
        load_preprocessor(args.model, kind).save_pretrained(tmp)
        write_model_card(tmp, original_stats=original_stats, pruned_stats=pruned_stats)
    print(f"saved {type(pruned).__name__} to {args.output}: params {original_stats['params']:,} -> "
          f"{pruned_stats['params']:,}, FLOPs {original_stats['flops']:,} -> {pruned_stats['flops']:,}")
