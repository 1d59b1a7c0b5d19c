"""UP-ViTs: score a ViT/DeiT image classifier on a proxy set and save a thinner stock model.

    python examples/prune_vit.py --model facebook/deit-base-patch16-224 --dataset imagenet-1k \\
        --proxy-size 2000 --hidden-size 384 --num-heads 6 --intermediate-size 1536 --output up-deit-s

`--model` and `--dataset` also take local paths (a `save_pretrained` folder; a `save_to_disk` folder or an
imagefolder tree), so it runs offline. The pruned model loads with plain `from_pretrained`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from transformers import AutoImageProcessor, AutoModelForImageClassification, HfArgumentParser

from upvit_hf import ImportanceScores, UPPruner
from upvit_hf.atomic import atomic_path
from upvit_hf.cli.common import target_from_arguments
from upvit_hf.evaluation.data import load_split, model_channels
from upvit_hf.proxy import image_proxy


@dataclass
class PruneArguments:
    model: str = field(metadata={"help": "hub id or local folder of a ViT/DeiT image classifier"})
    output: str = field(metadata={"help": "folder for the pruned model (written atomically)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing, non-empty output"})
    dataset: str = field(default="imagenet-1k", metadata={"help": "datasets name, save_to_disk folder or imagefolder"})
    split: str = field(default="train", metadata={"help": "split the proxy set is sampled from"})
    image_column: str = field(default="image")
    proxy_size: int = field(default=2000, metadata={"help": "random training images to score on (paper: 2000)"})
    seed: int = field(default=0)
    batch_size: int = field(default=64)
    variants_per_pass: int = field(default=16, metadata={"help": "channel removals per forward pass (memory)"})
    hidden_size: int | None = field(default=None)
    num_heads: int | None = field(default=None)
    intermediate_size: int | None = field(default=None)
    head_dim: int | None = field(default=None)
    ratio: float | None = field(default=None, metadata={"help": "keep this fraction of every component instead"})
    scores: str | None = field(default=None, metadata={"help": "reuse a saved scores file instead of scoring"})
    save_scores: str | None = field(default=None, metadata={"help": "also save the computed scores here"})


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(PruneArguments).parse_args_into_dataclasses(argv)
    model = AutoModelForImageClassification.from_pretrained(args.model)
    processor = AutoImageProcessor.from_pretrained(args.model)
    target = target_from_arguments(args, model.config)
    if target is None:
        raise ValueError("give --hidden-size, --num-heads and --intermediate-size (or --ratio)")
    pruner = UPPruner(model)
    pruner.check_target(target)  # fail before the expensive part
    if args.scores:
        scores = ImportanceScores.load(args.scores)
    else:
        dataset = load_split(args.dataset, args.split, streaming=True)  # a Hub dataset is streamed
        proxy = image_proxy(dataset, processor, size=args.proxy_size, seed=args.seed, batch_size=args.batch_size,
                            image_column=args.image_column, num_channels=model_channels(model))
        scores = pruner.score(proxy, variants_per_pass=args.variants_per_pass)
        if args.save_scores:
            scores.save(args.save_scores, overwrite=args.overwrite)
    small = pruner.prune(target, scores)
    with atomic_path(args.output, directory=True, overwrite=args.overwrite) as tmp:
        small.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"saved {type(small).__name__} to {args.output}: {params(model):,} -> {params(small):,} parameters")


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        sys.exit(f"error: {err}")
