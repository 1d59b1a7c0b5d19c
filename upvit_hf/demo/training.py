"""Training runs of the demo: `transformers.Trainer` for teachers, `DistillationTrainer` for every student.

All runs are CPU-only, save nothing, report nowhere and stay quiet: the demo shows one progress line per
stage instead of one bar per Trainer. Student runs are evaluated at checkpoints by a callback, so one run
gives the metric after every budget the report shows.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from ..distillation import DistillationTrainer
from .recipe import TrainRecipe

Evaluate = Callable[[PreTrainedModel], float]


@dataclass(frozen=True)
class TrainResult:
    """What a run reports: final training loss (mean over the last logging window), wall time, and the
    metric at each checkpoint step (0 = before training)."""

    steps: int
    final_loss: float
    seconds: float
    curve: dict[int, float] = field(default_factory=dict)


class CheckpointEvaluation(TrainerCallback):
    """Evaluate the model after the listed optimizer steps (and restore train mode)."""

    def __init__(self, model: PreTrainedModel, evaluate: Evaluate, steps: Sequence[int]) -> None:
        self.model = model
        self.evaluate = evaluate
        self.steps = set(steps)
        self.curve: dict[int, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            self.curve[state.global_step] = self.evaluate(self.model)
            self.model.train()
        return control


def training_arguments(recipe: TrainRecipe, seed: int, output_dir: str) -> TrainingArguments:
    """The shared recipe: AdamW, warm-up then the recipe's schedule, fixed steps, no checkpoints or reports."""
    return TrainingArguments(
        output_dir=output_dir,
        max_steps=recipe.steps,
        per_device_train_batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        weight_decay=recipe.weight_decay,
        lr_scheduler_type=recipe.schedule,
        warmup_steps=recipe.warmup,
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
    evaluate: Evaluate | None = None,
    eval_steps: Sequence[int] = (),
) -> TrainResult:
    """Train `model` in place: cross-entropy without a teacher, CE + α·T²·KL(teacher ‖ model) with one.

    With `evaluate`, the curve holds the metric before training (step 0) and after each of `eval_steps`.
    """
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
        curve: dict[int, float] = {}
        if evaluate is not None:
            curve[0] = evaluate(model)
            checkpoints = CheckpointEvaluation(model, evaluate, eval_steps)
            trainer.add_callback(checkpoints)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    if evaluate is not None:
        curve.update(checkpoints.curve)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    model.eval()
    return TrainResult(steps=trainer.state.global_step, final_loss=losses[-1] if losses else math.nan,
                       seconds=seconds, curve=curve)
