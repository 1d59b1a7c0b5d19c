"""Prune a GPT-2 language model with UP-ViTs: exact KL channel scores on a proxy set of text, then one cut.

The proxy set is `--proxy-size` sequences of `--seq-len` tokens, each read from a random line of the
train split onwards (seeded), and every channel's score is the KL divergence of the pruned-by-one model
from the original, summed over every token of every proxy sequence. For example:

    python examples/prune_gpt2.py --model openai-community/gpt2 --ratio 0.5 --proxy-size 64 \\
        --scores gpt2-scores.safetensors --output up-gpt2
    python examples/prune_gpt2.py --model ./gpt2 --dataset ./wiki.train.txt --hidden-size 512 --num-heads 8 \\
        --intermediate-size 2048 --scores gpt2-scores.safetensors --output up-gpt2-512   # reuses the scores

`--dataset` is a `datasets` name (default wikitext / wikitext-103-raw-v1), a `save_to_disk` folder, a folder
of .txt files (`<split>.txt` if present, else all of them) or one text file. `--scores` names a scores file:
reused when it exists (no data is read then), written after scoring otherwise. The pruned model and the
tokenizer are written to `--output` (through a temporary sibling, renamed when complete). Scoring cost grows
with proxy-size × seq-len × vocabulary per channel; fine-tune afterwards with examples/distill_gpt2.py.
Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch

DATASET_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


class UsageError(ValueError):
    """Bad command-line input."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="GPT-2 model: hub id or local folder")
    p.add_argument("--tokenizer", help="default: the model's")
    p.add_argument("--dataset", default="wikitext", help="datasets name, save_to_disk folder, text folder or file")
    p.add_argument("--dataset-config", default="wikitext-103-raw-v1", help="datasets configuration (hub names)")
    p.add_argument("--split", default="train")
    p.add_argument("--text-column", default="text")
    p.add_argument("--proxy-size", type=int, default=64, help="proxy sequences (default 64)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per proxy sequence (default 512)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="proxy sequences per scoring pass (default 1; memory grows with it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ratio", type=float,
                   help="keep this fraction of every width (0.5: GPT-2 768 → 384 wide, 6 heads of 64)")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--num-heads", type=int)
    p.add_argument("--intermediate-size", type=int)
    p.add_argument("--head-dim", type=int, help="must equal hidden-size // num-heads for stock GPT-2")
    p.add_argument("--variants-per-pass", type=int, default=16, help="channel removals per forward pass")
    p.add_argument("--scores", help="scores file: reused if it exists, written after scoring otherwise")
    p.add_argument("--output", required=True, help="folder for the pruned model and its tokenizer")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def check_args(args: argparse.Namespace) -> None:
    explicit = (args.hidden_size, args.num_heads, args.intermediate_size)
    if args.ratio is not None and (any(v is not None for v in explicit) or args.head_dim is not None):
        raise UsageError("give either --ratio or --hidden-size/--num-heads/--intermediate-size, not both")
    if args.ratio is None and any(v is None for v in explicit):
        raise UsageError("give --ratio, or all of --hidden-size, --num-heads and --intermediate-size")
    if args.ratio is not None and not 0 < args.ratio <= 1:
        raise UsageError(f"--ratio must be in (0, 1], got {args.ratio}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    for name in ("proxy_size", "seq_len", "batch_size", "variants_per_pass"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")


# ------------------------------------------------------------------------------ proxy text
def load_texts(name: str, config: str | None, split: str, column: str) -> list[str]:
    """The lines / documents of the train split, from a text file, a text folder, a saved dataset or the hub."""
    path = Path(name)
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines(keepends=True)
    if path.is_dir() and not any((path / m).exists() for m in DATASET_MARKERS):
        files = [path / f"{split}.txt"] if (path / f"{split}.txt").is_file() else sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{name!r} has no .txt files and is not a save_to_disk dataset folder")
        return [line for f in files for line in f.read_text(encoding="utf-8").splitlines(keepends=True)]

    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"{name!r} has no split {split!r}; it has {', '.join(ds)}")
            ds = ds[split]
    elif name.startswith(("/", ".", "~")) or path.suffix in (".txt", ".json", ".arrow"):
        raise ValueError(f"--dataset {name!r} does not exist")
    else:
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except (FileNotFoundError, ConnectionError) as e:
            raise ValueError(f"--dataset {name!r} could not be loaded (a local path that does not exist, or a "
                             f"datasets name that is unavailable offline): {e}") from e
    if column not in ds.column_names:
        raise ValueError(f"the dataset has no column {column!r}; it has {', '.join(ds.column_names)}")
    return list(ds[column])


def sample_sequences(texts: list[str], tokenizer, count: int, length: int, seed: int) -> torch.Tensor:
    """`count` sequences of `length` tokens, each the text from a random line onwards (wrapping around)."""
    if not texts:
        raise ValueError("the dataset split is empty")
    rng = random.Random(seed)
    cache: dict[int, list[int]] = {}

    def tokens(i: int) -> list[int]:
        if i not in cache:
            text = texts[i] if texts[i].endswith("\n") else texts[i] + "\n"
            cache[i] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return cache[i]

    sequences = []
    for _ in range(count):
        start = rng.randrange(len(texts))
        ids: list[int] = []
        for step in range(len(texts)):
            ids += tokens((start + step) % len(texts))
            if len(ids) >= length:
                break
        if len(ids) < length:
            raise ValueError(f"the text has only {len(ids)} tokens, fewer than --seq-len {length}")
        sequences.append(ids[:length])
    return torch.tensor(sequences, dtype=torch.long)


# ------------------------------------------------------------------------------ main
def target_from(args, config):
    from upvit_hf import PruningTarget

    if args.ratio is None:
        return PruningTarget(args.hidden_size, args.num_heads, args.intermediate_size, args.head_dim)
    target = PruningTarget.from_ratio(config, args.ratio)
    heads = target.num_attention_heads
    if target.hidden_size % heads:  # stock GPT-2: the hidden size must be a multiple of the head count
        hidden = max(heads, min(config.n_embd // heads * heads, round(target.hidden_size / heads) * heads))
        target = PruningTarget(hidden, heads, target.intermediate_size)
    return target


def run(args: argparse.Namespace) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from upvit_hf import ImportanceScores, UPPruner
    from upvit_hf.atomic import atomic_path

    logging.disable_progress_bar()  # stderr stays quiet until scoring starts
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    except OSError as e:
        raise ValueError(f"cannot load {args.tokenizer or args.model!r}: {e}") from e
    finally:
        logging.enable_progress_bar()
    model = model.to(args.device).eval()
    pruner = UPPruner(model)  # ValueError for unsupported models
    target = target_from(args, model.config)
    original = pruner.adapter.widths
    pruner.adapter.check_widths(target.resolve(original))  # fail before the expensive part

    if args.scores and os.path.exists(args.scores):
        scores = ImportanceScores.load(args.scores)
        scores.check_matches(original)
        print(f"reusing scores from {args.scores} ({scores.meta.get('method')}, proxy {scores.meta.get('proxy_size')})",
              file=sys.stderr)
    else:
        context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
        if args.seq_len > context:
            raise ValueError(f"--seq-len {args.seq_len} exceeds the model's context of {context} tokens")
        texts = load_texts(args.dataset, args.dataset_config, args.split, args.text_column)
        ids = sample_sequences(texts, tokenizer, args.proxy_size, args.seq_len, args.seed)
        proxy = [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in ids.split(args.batch_size)]
        scores = pruner.score(proxy, variants_per_pass=args.variants_per_pass)
        scores.meta.update(dataset=args.dataset, seq_len=args.seq_len, seed=args.seed)
        if args.scores:
            scores.save(args.scores)

    small = pruner.prune(target, scores)
    with atomic_path(args.output, directory=True) as tmp:
        small.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731 (tied weights counted once)
    return {
        "output": str(args.output), "original": original.as_dict(),
        "pruned": pruner.adapter.read_widths(small.config).as_dict(), "parameters": [count(model), count(small)],
        "method": scores.meta.get("method"), "proxy_size": scores.meta.get("proxy_size"),
    }


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        summary = run(args)
    except (ValueError, OSError) as e:
        message = " ".join(str(e).split())
        print(f"prune_gpt2.py: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
