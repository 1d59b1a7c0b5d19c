"""The comparison both halves of the demo run: one teacher, every pruning method at every width, scratch.

Train one teacher. Per seed: score its channels with each criterion (seeded proxy sample for KL, seeded
random scores), prune to every target width, and distil each student from the teacher, evaluating it before
fine-tuning and at checkpoints of one run; train the same architecture from random init with that recipe.
Seeds share the teacher: they vary what the compared methods control (proxy sample, random draw, data order,
scratch init), not the model being pruned.

The compared methods are `methods.METHODS`, chosen per half by the recipe's `methods`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, set_seed

from .. import PruningTarget, UPPruner
from ..record import RECORD_KEY
from .methods import REFERENCE, SCRATCH, method_labels, methods_for
from .progress import Stages
from .recipe import TrainRecipe
from .training import Evaluate, train


class SweepRecipe(Protocol):
    teacher: TrainRecipe
    student: TrainRecipe
    targets: dict[str, PruningTarget]
    eval_steps: tuple[int, ...]
    short_steps: int
    alpha: float
    temperature: float
    teacher_seed: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]


def stage_count(recipe: SweepRecipe) -> int:
    """Teacher, then per seed: scoring and one stage per target."""
    return 1 + len(recipe.seeds) * (1 + len(recipe.targets))


def scratch_copy(pruned: PreTrainedModel, seed: int) -> PreTrainedModel:
    """The pruned architecture with fresh random weights (and no pruning record: it was never pruned)."""
    config = copy.deepcopy(pruned.config)
    if hasattr(config, RECORD_KEY):
        delattr(config, RECORD_KEY)
    set_seed(seed)
    return type(pruned)(config)


@dataclass
class Sweep:
    """Everything measured: curves[target][method] is one {step: metric} per seed, in `seeds` order."""

    teacher: PreTrainedModel
    teacher_metric: float
    teacher_run: dict[str, Any]
    curves: dict[str, dict[str, list[dict[int, float]]]]
    students: dict[str, PreTrainedModel]  # per target, the first seed's UP (KL) student after distillation


def sweep(
    build_teacher: Callable[[], PreTrainedModel],
    train_set: torch.utils.data.Dataset,
    build_proxy: Callable[[int], Iterable[Mapping[str, torch.Tensor]]],
    evaluate: Evaluate,
    recipe: SweepRecipe,
    stages: Stages,
    *,
    variants_per_pass: int,
) -> Sweep:
    """Run the comparison over every seed, target and method (see the module docstring)."""
    with stages("train teacher"):
        set_seed(recipe.teacher_seed)
        teacher = build_teacher()
        teacher_run = train(teacher, train_set, recipe.teacher, recipe.teacher_seed).__dict__
        teacher_metric = evaluate(teacher)
    pruner = UPPruner(teacher)
    curves: dict[str, dict[str, list[dict[int, float]]]] = {
        name: {key: [] for key in method_labels(recipe.methods)} for name in recipe.targets
    }
    students: dict[str, PreTrainedModel] = {}

    def distil(student: PreTrainedModel, seed: int) -> dict[int, float]:
        return train(student, train_set, recipe.student, seed, teacher=teacher, alpha=recipe.alpha,
                     temperature=recipe.temperature, evaluate=evaluate, eval_steps=recipe.eval_steps).curve

    methods = methods_for(recipe.methods)
    for seed in recipe.seeds:
        with stages(f"seed {seed}: score channels"):
            proxy = build_proxy(seed)
            scores = {
                criterion: pruner.score(proxy, method=criterion, seed=seed, variants_per_pass=variants_per_pass,
                                        show_progress=False)
                for criterion in dict.fromkeys(m.score for m in methods)
            }
        for name, target in recipe.targets.items():
            with stages(f"seed {seed}: {name} target, {len(methods) + 1} students"):
                for method in methods:
                    student = method.prune(pruner, target, scores, proxy)
                    curves[name][method.key].append(distil(student, seed))
                    if method.key == REFERENCE:
                        students.setdefault(name, student)
                curves[name][SCRATCH].append(distil(scratch_copy(students[name], seed), seed))
    return Sweep(teacher, teacher_metric, teacher_run, curves, students)
