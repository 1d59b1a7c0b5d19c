"""Least-squares reconstruction on trained teachers: quality before and after a short distillation.

Trains the demo's teachers (the digits ViT and the Penn Treebank GPT-2, `upvit_hf.demo`), scores their
channels with each criterion, and cuts each to two targets:

* mild: the demo's mild target, every width at 3/4, heads kept (no merging);
* merged: the demo's aggressive target, half of every width, pairs of heads merged.

For each (target, criterion) it measures the pruned model without and with `reconstruct=` (refit on a proxy
set of training samples), then distils both for 50 and 150 steps with the demo's student recipe (optionally at
another `--learning-rate`; the teacher itself too, as a reference), and reports the reconstruction time.
Accuracy on the digits test split; perplexity on a prefix of the PTB test split.
Prints a markdown table per run, one of seed means, and one JSON line.

    python benchmarks/bench_reconstruct.py                 # both tasks, ~30 minutes a seed on 2 cores
    python benchmarks/bench_reconstruct.py --task vision --seeds 0 1 2 --steps   # before fine-tuning: seconds
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import GPT2LMHeadModel, PreTrainedModel, ViTForImageClassification, set_seed
from transformers.utils import logging

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.demo.data import TensorDictDataset, lm_blocks, load_digit_splits, load_treebank
from upvit_hf.demo.language import perplexity
from upvit_hf.demo.language import teacher_config as gpt2_teacher_config
from upvit_hf.demo.recipe import language_recipe, vision_recipe
from upvit_hf.demo.training import train
from upvit_hf.demo.vision import accuracy
from upvit_hf.demo.vision import teacher_config as vit_teacher_config
from upvit_hf.proxy import image_proxy, text_proxy
from upvit_hf.scoring import METHODS

CRITERIA = [m for m in ("kl", "fisher", "magnitude") if m in METHODS]
DISTILL_STEPS = (50, 150)


@dataclasses.dataclass
class Task:
    name: str
    metric: str
    teacher: PreTrainedModel
    train_set: torch.utils.data.Dataset
    score_proxy: list[dict[str, torch.Tensor]]
    recon_proxy: list[dict[str, torch.Tensor]]
    evaluate: Callable[[PreTrainedModel], float]
    targets: dict[str, PruningTarget]
    recipe: Any


def trained_teacher(build: Callable[[], PreTrainedModel], saved: str | None, train_set, recipe, seed: int):
    """The demo's teacher: trained here with the demo's recipe, or loaded from a folder `upvit demo` saved."""
    if saved is not None:
        return type(build()).from_pretrained(saved).eval()
    set_seed(seed)
    teacher = build()
    train(teacher, train_set, recipe.teacher, seed)
    return teacher


def vision_task(seed: int, recon_images: int, saved: str | None = None) -> Task:
    recipe = vision_recipe()
    splits = load_digit_splits()
    train_set = TensorDictDataset(pixel_values=splits.pixel_values(splits.train),
                                  labels=torch.tensor(splits.train["label"]))
    teacher = trained_teacher(lambda: ViTForImageClassification(vit_teacher_config(recipe)), saved, train_set,
                              recipe, seed)
    return Task(
        "vision", "accuracy", teacher, train_set,
        image_proxy(splits.train, splits.processor, size=recipe.proxy_size, seed=seed, num_channels=1),
        image_proxy(splits.train, splits.processor, size=recon_images, seed=seed + 1000, num_channels=1),
        lambda model: accuracy(model, splits),
        {"mild": recipe.targets["mild"], "merged": recipe.targets["aggressive"]},  # the demo's targets
        recipe,
    )


def language_task(seed: int, recon_sequences: int, test_tokens: int, saved: str | None = None) -> Task:
    recipe = language_recipe()
    data = load_treebank()
    test = data.test[:test_tokens]
    train_set = lm_blocks(data.train, recipe.block_size)
    teacher = trained_teacher(lambda: GPT2LMHeadModel(gpt2_teacher_config(recipe, data)), saved, train_set,
                              recipe, seed)
    return Task(
        "language", "perplexity", teacher, train_set,
        text_proxy(data.train, size=recipe.proxy_sequences, seq_len=recipe.proxy_length, seed=seed,
                   batch_size=recipe.proxy_sequences),
        text_proxy(data.train, size=recon_sequences, seq_len=recipe.block_size, seed=seed + 1000, batch_size=32),
        lambda model: perplexity(model, test, recipe),
        {"mild": recipe.targets["mild"], "merged": recipe.targets["aggressive"]},  # the demo's targets
        recipe,
    )


def distilled(model: PreTrainedModel, task: Task, steps: int, seed: int,
              learning_rate: float | None) -> PreTrainedModel:
    """A copy of `model` distilled from the teacher with the demo's student recipe for `steps` steps."""
    student = copy.deepcopy(model)
    recipe = dataclasses.replace(task.recipe.student, steps=steps,
                                 learning_rate=learning_rate or task.recipe.student.learning_rate)
    train(student, task.train_set, recipe, seed, teacher=task.teacher, alpha=task.recipe.alpha,
          temperature=task.recipe.temperature)
    return student


def run_task(task: Task, seed: int, steps: tuple[int, ...], criteria: list[str] = CRITERIA,
             learning_rate: float | None = None) -> list[dict[str, Any]]:
    pruner = UPPruner(task.teacher)
    teacher_metric = task.evaluate(task.teacher)
    # the recipe applied to the teacher itself: what distillation does to a start that is already optimal
    reference = {f"teacher_distil{total}": task.evaluate(distilled(task.teacher, task, total, seed, learning_rate))
                 for total in steps}
    rows = []
    for method in criteria:
        scores = pruner.score(task.score_proxy, method=method, seed=seed, show_progress=False)
        for target_name, target in task.targets.items():
            row: dict[str, Any] = {"task": task.name, "seed": seed, "target": target_name, "criterion": method,
                                   "teacher": teacher_metric, **reference}
            start = time.perf_counter()
            rebuilt = pruner.prune(target, scores, reconstruct=task.recon_proxy, show_progress=False)
            row["recon_seconds"] = time.perf_counter() - start
            plain = pruner.prune(target, scores)
            for name, model in (("pruned", plain), ("recon", rebuilt)):
                row[name] = task.evaluate(model)
            logging.get_logger("bench").warning(json.dumps(row))  # before fine-tuning, as soon as known
            for name, model in (("pruned", plain), ("recon", rebuilt)):
                for total in steps:  # each budget is its own run
                    row[f"{name}_distil{total}"] = task.evaluate(distilled(model, task, total, seed, learning_rate))
            rows.append(row)
            logging.get_logger("bench").warning(json.dumps(row))
    return rows


def map_errors(task: Task) -> dict[str, list[list[float]]]:
    """Per refit map (branch order): relative output error on the reconstruction proxy before → after the refit,
    for each target plus one that only merges pairs of heads (what the merged softmax alone leaves)."""
    from upvit_hf.adapters import adapter_for
    from upvit_hf.reconstruct import reconstruct
    from upvit_hf.targets import PruningPlan

    pruner = UPPruner(task.teacher)
    widths = pruner.adapter.widths
    scores = pruner.score(task.score_proxy, show_progress=False)
    targets = {**task.targets, "heads-only-merge": PruningTarget(
        widths.hidden_size, widths.num_attention_heads // 2, widths.intermediate_size, head_dim=2 * widths.head_dim)}
    errors = {}
    for name, target in targets.items():
        plan = PruningPlan.from_scores(scores, widths, pruner.check_target(target))
        model = pruner.prune(target, scores)
        report = reconstruct(pruner.adapter, adapter_for(model), task.recon_proxy, plan.residual,
                             [True] * 2 * widths.num_hidden_layers, show_progress=False)
        errors[name] = [[round(f.as_dict()["relative_error_before"], 3), round(f.as_dict()["relative_error_after"], 3)]
                        for f in report.fits]
    return errors


def recovered(row: dict[str, Any], higher_is_better: bool) -> float:
    """Fraction of the before-fine-tuning drop that reconstruction recovers (in log perplexity for LMs)."""
    import math

    f = (lambda v: v) if higher_is_better else (lambda v: -math.log(v))
    drop = f(row["teacher"]) - f(row["pruned"])
    return (f(row["recon"]) - f(row["pruned"])) / drop if drop else float("nan")


def summary(rows: list[dict[str, Any]], steps: tuple[int, ...]) -> str:
    """Markdown: per (task, target, criterion) the seed means without → with reconstruction, before and after
    each distillation budget, on how many seeds reconstruction was better, and the teacher distilled alike."""
    import statistics

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["target"], row["criterion"]), []).append(row)
    stages = ["", *[f"_distil{total}" for total in steps]]
    lines = ["| task | target | criterion | seeds | " + " | ".join(
        ["before fine-tuning", *[f"after {total} steps" for total in steps]]) + " |", "|" + "---|" * (4 + len(stages))]
    for (task, target, criterion), group in groups.items():
        vision = task == "vision"
        cells = []
        for stage in stages:
            plain = [r["pruned" + stage] for r in group]
            recon = [r["recon" + stage] for r in group]
            better = sum((b > a) if vision else (b < a) for a, b in zip(plain, recon))
            number = "{:.3f}" if vision else "{:.1f}"
            reference = ""
            if stage:
                reference = f"; teacher {number.format(statistics.mean(r['teacher' + stage] for r in group))}"
            cells.append(f"{number.format(statistics.mean(plain))} → {number.format(statistics.mean(recon))} "
                         f"({better}/{len(group)}{reference})")
        lines.append(f"| {task} | {target} | {criterion} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("vision", "language", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, nargs="*", default=list(DISTILL_STEPS))
    parser.add_argument("--recon-images", type=int, default=512)
    parser.add_argument("--recon-sequences", type=int, default=128)
    parser.add_argument("--test-tokens", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--criteria", nargs="+", choices=CRITERIA, default=CRITERIA)
    parser.add_argument("--learning-rate", type=float,
                        help="distillation learning rate (default: the demo's student recipe, for both starts)")
    parser.add_argument("--map-errors", action="store_true",
                        help="only print each refit map's relative error before/after (KL scores; incl. heads-only merge)")
    parser.add_argument("--vision-teacher", help="reuse the digits ViT `upvit demo` saved (vision/teacher-vit-digits)")
    parser.add_argument("--language-teacher", help="reuse the PTB GPT-2 `upvit demo` saved (language/teacher-gpt2-ptb)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.set_verbosity_warning()

    if args.map_errors:
        tasks = {"vision": lambda s: vision_task(s, args.recon_images, args.vision_teacher),
                 "language": lambda s: language_task(s, args.recon_sequences, args.test_tokens, args.language_teacher)}
        for name in ("vision", "language") if args.task == "both" else (args.task,):
            print(json.dumps({"benchmark": "reconstruct-map-errors", "task": name,
                              "errors": map_errors(tasks[name](args.seeds[0]))}))
        return
    rows = []
    for seed in args.seeds:
        if args.task in ("vision", "both"):
            rows += run_task(vision_task(seed, args.recon_images, args.vision_teacher), seed, tuple(args.steps),
                             args.criteria, args.learning_rate)
        if args.task in ("language", "both"):
            rows += run_task(language_task(seed, args.recon_sequences, args.test_tokens, args.language_teacher),
                             seed, tuple(args.steps), args.criteria, args.learning_rate)

    columns = ["pruned", "recon"] + [f"{n}_distil{s}" for s in args.steps for n in ("pruned", "recon")]
    print("| task | seed | target | criterion | teacher | " + " | ".join(columns) + " | recovered | recon s |")
    print("|" + "---|" * (len(columns) + 7))
    for row in rows:
        good = row["task"] == "vision"
        cells = [f"{row[c]:.3f}" if good else f"{row[c]:.1f}" for c in ["teacher", *columns]]
        print(f"| {row['task']} | {row['seed']} | {row['target']} | {row['criterion']} | " + " | ".join(cells)
              + f" | {recovered(row, good):.2f} | {row['recon_seconds']:.2f} |")
    print("\nSeed means, without → with reconstruction (seeds on which reconstruction is better; the teacher "
          "itself after the same distillation):\n")
    print(summary(rows, tuple(args.steps)))
    print(json.dumps({"benchmark": "reconstruct", "args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
