"""What several `upvit` subcommands share: loading models and their preprocessors, proxy sets, targets."""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from transformers import AutoConfig, PreTrainedModel

from ..adapters import adapter_class_for_config, load_pretrained
from ..atomic import check_output
from ..evaluation.complexity import max_positions
from ..evaluation.data import DEFAULT_TEXT_CONFIG, check_exists, load_split, model_channels, text_documents
from ..model_io import load_processor
from ..proxy import document_proxy, image_proxy
from ..scoring import DEFAULT_LABELS_PER_INPUT, METHODS
from ..targets import PruningTarget


class CLIError(ValueError):
    """Bad input to the command line: reported as one line on stderr, exit code 2."""


def positive_int(value: str) -> int:
    """argparse type of sizes and counts: a zero batch size or proxy size is a mistake, not a request."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def path_arg(value: str) -> str:
    """argparse type of paths (and hub ids): `~` expanded, as a shell would outside quotes."""
    return os.path.expanduser(value)


def add_output_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--output", type=path_arg, required=True, help=help)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing, non-empty --output (only once the new output is complete)")


def check_output_argument(path: str | os.PathLike | None, overwrite: bool) -> None:
    """Refuse an existing, non-empty output before any work (the write itself checks again)."""
    if path is not None:
        check_output(path, overwrite=overwrite, flag="--overwrite")


def load_config(name_or_path: str):
    """The config of a local model folder or hub id; a clear error for a missing folder."""
    check_exists(name_or_path, "model folder")
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise CLIError(f"cannot load model {name_or_path!r}: not a model folder and not reachable on the Hub "
                       f"({str(err).splitlines()[0]})") from err


def load_model(name_or_path: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The model as the class its checkpoint was saved as (heads kept); one line naming the supported classes
    for a class no adapter supports. In `dtype` if given, else in the dtype the checkpoint was stored in."""
    return load_pretrained(name_or_path, config=load_config(name_or_path), dtype=dtype).eval()


def modality(model: PreTrainedModel) -> str:
    """'image' or 'text', as the model's adapter says."""
    return adapter_class_for_config(model.config).modality


def load_preprocessor(name_or_path: str, kind: str) -> Any:
    """The image processor or tokenizer saved with the model."""
    try:
        return load_processor(name_or_path, kind)
    except ValueError as err:
        raise CLIError(str(err)) from err


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("proxy set (the samples channels are scored on)")
    group.add_argument("--dataset", type=path_arg,
                       help="datasets name (streamed), save_to_disk folder, imagefolder, or text file/folder "
                            "(default: imagenet-1k for image models, wikitext for language models)")
    group.add_argument("--dataset-config", default=None, help=f"datasets config (text default: {DEFAULT_TEXT_CONFIG})")
    group.add_argument("--split", default="train", help="split the proxy set is sampled from (default: train)")
    group.add_argument("--column", default=None, help="image or text column (default: image / text)")
    group.add_argument("--proxy-size", type=positive_int,
                       default=2000, help="samples (images or sequences; default 2000)")
    group.add_argument("--seq-len", type=positive_int,
                       default=512, help="tokens per proxy sequence (language models)")
    group.add_argument("--batch-size", type=positive_int,
                       default=32, help="proxy samples per forward pass (default 32)")
    group.add_argument("--seed", type=int, default=0, help="seed of the proxy sample and of --method random")
    group.add_argument("--method", default="kl", choices=METHODS,
                       help="importance criterion: kl (the paper's, exact), fisher (its fast second-order "
                            "estimate), hybrid (exact for residual and attention, Fisher for FFN) or a baseline")
    group.add_argument("--labels-per-input", type=positive_int, default=DEFAULT_LABELS_PER_INPUT, metavar="K",
                       help="fisher/hybrid: labels from the model's own output per input (per token for language "
                            f"models), one backward pass each (default {DEFAULT_LABELS_PER_INPUT})")


def needs_proxy(method: str) -> bool:
    """Whether a scoring method reads a proxy set (the baselines need no data)."""
    return method in ("kl", "fisher", "hybrid")


def score_with_arguments(pruner, args: argparse.Namespace, proxy, **scale: Any):
    """`pruner.score` with the method options of the proxy arguments (and the exact pass's `scale` options)."""
    return pruner.score(proxy, method=args.method, variants_per_pass=args.variants_per_pass, seed=args.seed,
                        labels_per_input=args.labels_per_input, **scale)


def build_proxy(args: argparse.Namespace, model_name: str, model: PreTrainedModel) -> list[dict]:
    """The proxy batches named by the proxy arguments: a Hub dataset is streamed (only the proxy samples and a
    shuffle buffer are read), text is tokenized document by document until enough tokens are collected."""
    kind = modality(model)
    preprocessor = load_preprocessor(model_name, kind)
    if kind == "image":
        dataset = load_split(args.dataset or "imagenet-1k", args.split, config_name=args.dataset_config,
                             streaming=True)
        return image_proxy(dataset, preprocessor, size=args.proxy_size, seed=args.seed, batch_size=args.batch_size,
                           image_column=args.column or "image", num_channels=model_channels(model))
    context = max_positions(model)
    if context is not None and args.seq_len > context:
        raise CLIError(f"--seq-len {args.seq_len} exceeds the model's context of {context} tokens")
    documents = text_documents(args.dataset or "wikitext", args.dataset_config or DEFAULT_TEXT_CONFIG, args.split,
                               text_column=args.column or "text", seed=args.seed)
    return document_proxy(documents, preprocessor, size=args.proxy_size, seq_len=args.seq_len, seed=args.seed,
                          batch_size=args.batch_size)


def per_stage(text: str) -> int | tuple[int, ...]:
    """A positive int, or comma-separated ones with one per stage of a hierarchical model (PVTv2): `32,64,160,256`."""
    try:
        values = tuple(positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or comma-separated positive integers "
                                         f"(one per stage), got {text!r}") from None
    return values[0] if len(values) == 1 else values


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target widths (the same in every layer; hierarchical models (PVTv2) "
                                      "take one comma-separated value per stage)")
    group.add_argument("--hidden-size", type=per_stage, help="residual width")
    group.add_argument("--num-heads", type=per_stage, help="attention heads (must divide the current count)")
    group.add_argument("--intermediate-size", type=per_stage, help="FFN width")
    group.add_argument("--head-dim", type=per_stage, help="dims per head (default hidden-size // num-heads)")
    group.add_argument("--ratio", type=float, help="keep this fraction of every component instead")


def target_from_arguments(args: argparse.Namespace, config) -> PruningTarget | None:
    """The width target of `--hidden-size/--num-heads/--intermediate-size[/--head-dim]` or `--ratio`;
    None when no width change was asked for."""
    widths = (args.hidden_size, args.num_heads, args.intermediate_size)
    if args.ratio is not None:
        if any(w is not None for w in widths):
            raise CLIError("give either --ratio or --hidden-size/--num-heads/--intermediate-size, not both")
        return PruningTarget.from_ratio(config, args.ratio)
    if all(w is None for w in widths) and args.head_dim is None:
        return None
    if any(w is None for w in widths):
        raise CLIError("give all of --hidden-size, --num-heads and --intermediate-size (or --ratio)")
    return PruningTarget(*widths, head_dim=args.head_dim)


