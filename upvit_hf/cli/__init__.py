"""The `upvit` command line: convert-vocab, score, prune, distill, evaluate, push, demo.

Bad input ends with one line on stderr and exit code 2, never a traceback, and leaves no output behind.
"""

from __future__ import annotations

import argparse
import sys

from . import convert_vocab, demo, distill, evaluate, prune, push, score

SUBCOMMANDS = (convert_vocab, score, prune, distill, evaluate, push, demo)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors (a missing or malformed argument) are one line too, pointing at `--help`."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="upvit", description="UP-ViTs structured pruning for Hugging Face models. `upvit CMD --help` for more."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for subcommand in SUBCOMMANDS:
        subcommand.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "distill":  # everything after the subcommand belongs to the recipe's HfArgumentParser
        args.recipe_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.run(args)
    except (ValueError, OSError) as err:  # CLIError is a ValueError; OSError: missing files, no network
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"upvit {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
