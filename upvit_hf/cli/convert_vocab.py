"""`upvit convert-vocab`: write a transformers-5 tokenizer for a checkpoint whose vocabulary only 4.x can read."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ..adapters import adapter_class_for_config
from .common import CLIError, load_config, path_arg

EXAMPLE = """examples:
  upvit convert-vocab --model ./transfo-xl-wt103              # adds tokenizer.json next to vocab.pkl
  upvit convert-vocab --model transfo-xl/transfo-xl-wt103 --output ./wt103-tokenizer
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-vocab", help="convert a 4.x vocabulary (Transformer-XL vocab.pkl) into a fast tokenizer",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", type=path_arg, required=True,
                        help="hub id or local folder holding the 4.x vocabulary")
    parser.add_argument("--output", type=path_arg,
                        help="folder to write the tokenizer files into (default: --model, a folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace tokenizer files that already exist there (e.g. 4.x's tokenizer_config.json)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    output = Path(args.output or args.model)
    if args.output is None and not output.is_dir():
        raise CLIError(f"{args.model!r} is not a local folder; pass --output")
    tokenizer = adapter_class_for_config(load_config(args.model)).legacy_tokenizer(args.model)
    if tokenizer is None:
        raise CLIError(f"{args.model!r} has no vocabulary to convert (no vocab.pkl)")
    with tempfile.TemporaryDirectory(dir=output.parent if output.parent.exists() else None) as tmp:
        names = [Path(f).name for f in tokenizer.save_pretrained(tmp)]
        clashes = sorted(n for n in names if (output / n).exists())
        if clashes and not args.overwrite:
            raise CLIError(f"{output} already has {', '.join(clashes)}; pass --overwrite to replace them")
        output.mkdir(parents=True, exist_ok=True)
        for name in names:  # each file appears complete (rename within one filesystem)
            shutil.move(str(Path(tmp) / name), str(output / name))
    print(f"wrote {', '.join(sorted(names))} to {output} ({len(tokenizer)} words)")
