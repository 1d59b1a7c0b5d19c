"""UP-ViTs for GPT-2: exact KL channel scores on a proxy set of text, then one cut to a thinner stock model.

    python examples/prune_gpt2.py --model openai-community/gpt2 --ratio 0.5 --proxy-size 64 \\
        --scores gpt2-scores.safetensors --output up-gpt2
    python examples/prune_gpt2.py --model ./gpt2 --dataset ./wiki.train.txt --hidden-size 512 --num-heads 8 \\
        --intermediate-size 2048 --scores gpt2-scores.safetensors --output up-gpt2-512   # reuses the scores

The proxy set is `--proxy-size` windows of `--seq-len` tokens at seeded random offsets of the train split;
a channel's score is the KL of the model without it from the original, summed over every token.
`--dataset` is a `datasets` name (default wikitext / wikitext-103-raw-v1), a `save_to_disk` folder, a folder
of .txt files or one text file. `--scores` is reused when the file exists (no data is read then) and written
after scoring otherwise. Fine-tune afterwards with examples/distill_gpt2.py. Bad input: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

from upvit_hf import ImportanceScores, UPPruner
from upvit_hf.atomic import atomic_path
from upvit_hf.cli.common import load_config, target_from_arguments
from upvit_hf.evaluation import max_positions, text_documents
from upvit_hf.proxy import document_proxy


@dataclass
class PruneArguments:
    model: str = field(metadata={"help": "GPT-2 model: hub id or local folder"})
    output: str = field(metadata={"help": "folder for the pruned model and its tokenizer (written atomically)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing, non-empty output"})
    dataset: str = field(default="wikitext", metadata={"help": "datasets name, save_to_disk folder, text file(s)"})
    dataset_config: str | None = field(default="wikitext-103-raw-v1")
    split: str = field(default="train")
    text_column: str = field(default="text")
    proxy_size: int = field(default=64, metadata={"help": "proxy sequences"})
    seq_len: int = field(default=512, metadata={"help": "tokens per proxy sequence"})
    batch_size: int = field(default=1, metadata={"help": "proxy sequences per pass (memory grows with it)"})
    seed: int = field(default=0)
    variants_per_pass: int = field(default=16, metadata={"help": "channel removals per forward pass"})
    hidden_size: int | None = field(default=None)
    num_heads: int | None = field(default=None)
    intermediate_size: int | None = field(default=None)
    head_dim: int | None = field(default=None, metadata={"help": "must equal hidden-size // num-heads for GPT-2"})
    ratio: float | None = field(default=None, metadata={"help": "keep this fraction of every width instead"})
    scores: str | None = field(default=None, metadata={"help": "reused if it exists, written after scoring otherwise"})


def run(args: PruneArguments) -> dict:
    load_config(args.model)  # a clear error for a missing folder
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    pruner = UPPruner(model)
    target = target_from_arguments(args, model.config)
    if target is None:
        raise ValueError("give --ratio, or all of --hidden-size, --num-heads and --intermediate-size")
    original = pruner.adapter.widths
    pruner.check_target(target)  # fail before the expensive part

    if args.scores and os.path.exists(args.scores):
        scores = ImportanceScores.load(args.scores)
    else:
        context = max_positions(model)
        if context is not None and args.seq_len > context:
            raise ValueError(f"--seq-len {args.seq_len} exceeds the model's context of {context} tokens")
        documents = text_documents(args.dataset, args.dataset_config, args.split, text_column=args.text_column,
                                   seed=args.seed)
        proxy = document_proxy(documents, tokenizer, size=args.proxy_size, seq_len=args.seq_len, seed=args.seed,
                               batch_size=args.batch_size)
        scores = pruner.score(proxy, variants_per_pass=args.variants_per_pass)
        if args.scores:
            scores.save(args.scores)

    small = pruner.prune(target, scores)
    with atomic_path(args.output, directory=True, overwrite=args.overwrite) as tmp:
        small.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied weights counted once)
    return {"output": args.output, "original": original.as_dict(),
            "pruned": pruner.adapter.read_widths(small.config).as_dict(), "parameters": [count(model), count(small)],
            "method": scores.meta.get("method"), "proxy_size": scores.meta.get("proxy_size")}


def main(argv: list[str] | None = None) -> int:
    try:
        (args,) = HfArgumentParser(PruneArguments).parse_args_into_dataclasses(argv)
        summary = run(args)
    except (ValueError, OSError) as err:
        print(f"prune_gpt2.py: error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
