"""`upvit evaluate`: accuracy (image models) or perplexity (language models), plus size and speed."""

from __future__ import annotations

import argparse

from ..atomic import write_json
from ..evaluation import (
    evaluate_accuracy,
    evaluate_perplexity,
    image_throughput,
    model_stats,
    token_throughput,
)
from ..evaluation.data import DEFAULT_TEXT_CONFIG, load_split
from .common import (
    check_output_argument,
    load_model,
    load_preprocessor,
    modality,
    path_arg,
    positive_int,
)

EXAMPLE = """examples:
  upvit evaluate --model ./up-deit-s --dataset imagenet-1k --split validation --output eval.json
  upvit evaluate --model ./up-gpt2 --dataset wikitext --dataset-config wikitext-103-raw-v1 --stride 512
  upvit evaluate --model ./tiny-vit --dataset ./digits --split test --max-samples 200
  upvit evaluate --model ./up-transfo-xl --dataset wikitext --dataset-config wikitext-103-v1 --tgt-len 128 \
      --mem-len 1600 --clamp-len 1000
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="accuracy or perplexity, plus params, FLOPs and throughput",
                                   epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=path_arg, required=True, help="hub id or local folder")
    parser.add_argument("--dataset", type=path_arg,
                        help="default: imagenet-1k (image models) / wikitext (language models)")
    parser.add_argument("--dataset-config", help=f"datasets config (text default: {DEFAULT_TEXT_CONFIG})")
    parser.add_argument("--split", help="default: validation (images) / test (text)")
    parser.add_argument("--column", help="image or text column (default: image / text)")
    parser.add_argument("--label-column", default="label", help="label column of image datasets")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="evaluation and throughput batch size")
    parser.add_argument("--max-samples", type=positive_int, help="evaluate on the first N images only")
    parser.add_argument("--max-length", type=positive_int, help="sliding-window length (default: the model's maximum)")
    parser.add_argument("--stride", type=positive_int, help="sliding-window stride (default: half the window)")
    memory = parser.add_argument_group("models with memories (Transformer-XL): the WikiText-103 protocol")
    memory.add_argument("--tgt-len", type=positive_int, default=128, help="segment length (default: 128)")
    memory.add_argument("--mem-len", type=int, default=1600, help="memory length (default: 1600)")
    memory.add_argument("--clamp-len", type=int, default=1000, help="clamp relative distances (0: none; default 1000)")
    parser.add_argument("--output", type=path_arg, help="write the results here as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    check_output_argument(args.output, args.overwrite)
    model = load_model(args.model)
    kind = modality(model)
    preprocessor = load_preprocessor(args.model, kind)
    if kind == "image":
        dataset = load_split(args.dataset or "imagenet-1k", args.split or "validation",
                             config_name=args.dataset_config, streaming=args.max_samples is not None)
        metrics = evaluate_accuracy(model, dataset, preprocessor, image_column=args.column or "image",
                                    label_column=args.label_column, batch_size=args.batch_size,
                                    max_samples=args.max_samples)
        speed = image_throughput(model, batch_size=args.batch_size)
    else:
        result = evaluate_perplexity(model, preprocessor, args.dataset or "wikitext",
                                     config_name=args.dataset_config or DEFAULT_TEXT_CONFIG,
                                     split=args.split or "test", text_column=args.column or "text",
                                     max_length=args.max_length, stride=args.stride, tgt_len=args.tgt_len,
                                     mem_len=args.mem_len, clamp_len=args.clamp_len)
        metrics = result.to_dict()
        speed = token_throughput(model, batch_size=min(args.batch_size, 8))
    report = {"model": args.model, "metrics": metrics, "stats": model_stats(model), "throughput": speed.to_dict()}
    rows = [*metrics.items(), ("params", report["stats"]["params"]), ("FLOPs / sample", report["stats"]["flops"]),
            (f"throughput ({speed.unit})", round(speed.items_per_second, 1))]
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {value:,}" if isinstance(value, int) else f"{name:<{width}}  {value}"
                    for name, value in rows))
    if args.output:
        write_json(args.output, report, overwrite=args.overwrite)
