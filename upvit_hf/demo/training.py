"""Training runs of the demo: `transformers.Trainer` for teachers, `DistillationTrainer` for every student.

All runs are CPU-only, save nothing, report nowhere and stay quiet: the demo shows one progress line per
stage instead of one bar per Trainer.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PrinterCallback, ProgressCallback, Trainer, TrainingArguments

from ..distillation import DistillationTrainer
from .recipe import TrainRecipe


@dataclass(frozen=True)
class TrainResult:
    """What a run reports: its final training loss (mean over the last logging window) and wall time."""

    steps: int
    final_loss: float
    seconds: float


def training_arguments(recipe: TrainRecipe, seed: int, output_dir: str) -> TrainingArguments:
    """The shared recipe: AdamW, warm-up then cosine decay, fixed steps, no checkpoints or reporting."""
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, round(recipe.warmup_fraction * recipe.steps)),
        logging_steps=max(1, recipe.steps // 5),
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=seed,
        data_seed=seed,
    )


def train(
    model: PreTrainedModel,
    dataset: torch.utils.data.Dataset,
    recipe: TrainRecipe,
    seed: int,
    *,
    teacher: PreTrainedModel | None = None,
    alpha: float = 1.0,
    temperature: float = 1.0,
) -> TrainResult:
    """Train `model` in place: cross-entropy without a teacher, CE + α·T²·KL(teacher ‖ model) with one."""
    with tempfile.TemporaryDirectory(prefix="upvit-demo-") as scratch:
        args = training_arguments(recipe, seed, scratch)
        if teacher is None:
            trainer: Trainer = Trainer(model=model, args=args, train_dataset=dataset)
        else:
            trainer = DistillationTrainer(
                model=model, args=args, train_dataset=dataset,
                teacher_model=teacher, alpha=alpha, temperature=temperature,
            )
        for callback in (PrinterCallback, ProgressCallback):  # the demo prints its own progress
            trainer.remove_callback(callback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    return TrainResult(steps=trainer.state.global_step, final_loss=losses[-1] if losses else math.nan,
                       seconds=seconds)
