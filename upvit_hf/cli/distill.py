"""`upvit distill`: fine-tune a pruned student with soft distillation from its teacher (paper Eq. 2).

Runs the recipe for the student's modality with every `TrainingArguments` option; under
`accelerate launch -m upvit_hf.cli distill ...` or `torchrun` it trains on several processes.
"""

from __future__ import annotations

import argparse
import sys

from ..adapters import adapter_class_for_config
from .common import CLIError, load_config

EXAMPLE = """usage: upvit distill --student DIR --teacher DIR_OR_ID --dataset NAME_OR_DIR --output_dir DIR [options]

Fine-tunes the student with CE + alpha*T^2*KL to the teacher. Image students use the authors' ImageNet
recipe (AdamW, cosine schedule with warm-up, RandomResizedCrop + flip + CutMix, optional --ema_decay);
language-model students train on text grouped into --block_size blocks. Every TrainingArguments option
is accepted (--learning_rate, --max_steps, --per_device_train_batch_size, --bf16, ...).

examples:
  upvit distill --student ./up-deit-s --teacher facebook/deit-base-patch16-224 --dataset imagenet-1k \\
      --output_dir up-deit-s-ft --num_train_epochs 100 --per_device_train_batch_size 256 --bf16
  accelerate launch -m upvit_hf.cli distill --student ./up-gpt2 --teacher gpt2 --dataset ./ptb \\
      --output_dir up-gpt2-ft --max_steps 1000

`upvit distill --student DIR --help` lists every option of that student's recipe.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("distill", help="fine-tune a pruned student with distillation (Trainer)",
                                   add_help=False, usage=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def _student(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--student" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--student="):
            return arg.split("=", 1)[1]
    return None


def run(args: argparse.Namespace) -> None:
    argv = args.recipe_args
    student = _student(argv)
    if student is None:
        if {"-h", "--help"} & set(argv) or not argv:
            print(EXAMPLE)
            return
        raise CLIError("--student is required (a pruned model folder or hub id)")
    if adapter_class_for_config(load_config(student)).modality == "image":
        from ..recipes.image_distillation import main as recipe
    else:
        from ..recipes.lm_distillation import main as recipe
    sys.argv[0] = "upvit distill"
    metrics = recipe(argv)
    print("\n".join(f"{name}: {value}" for name, value in metrics.items()))
