"""The comparison both halves of the demo run: one teacher, every pruning criterion, and a scratch baseline.

Train the teacher; score its channels with each criterion (KL, magnitude, random); cut each to the same
widths and distil each for the same steps; train the same architecture from random init with that recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, set_seed

from .. import PruningTarget, UPPruner
from ..record import RECORD_KEY
from .progress import Stages
from .recipe import TrainRecipe
from .rows import METHOD_NAMES, PRUNING_METHODS
from .training import train

STAGES = 2 + len(PRUNING_METHODS) + 1  # teacher, scoring, one per pruning method, scratch


class ComparisonRecipe(Protocol):
    teacher: TrainRecipe
    student: TrainRecipe
    width_ratio: float
    alpha: float
    temperature: float


def scratch_copy(pruned: PreTrainedModel, seed: int) -> PreTrainedModel:
    """The pruned architecture with fresh random weights (and no pruning record: it was never pruned)."""
    config = copy.deepcopy(pruned.config)
    if hasattr(config, RECORD_KEY):
        delattr(config, RECORD_KEY)
    set_seed(seed)
    return type(pruned)(config)


def compare(
    build_teacher: Callable[[], PreTrainedModel],
    train_set: torch.utils.data.Dataset,
    build_proxy: Callable[[], Iterable[dict[str, torch.Tensor]]],
    evaluate: Callable[[PreTrainedModel], float],
    recipe: ComparisonRecipe,
    seed: int,
    stages: Stages,
    *,
    variants_per_pass: int,
    stage_prefix: str = "",
) -> tuple[dict[str, float], dict[str, Any], PreTrainedModel, PreTrainedModel]:
    """The metric of every row for one seed, training notes, the teacher and the UP-distilled student."""
    metric: dict[str, float] = {}
    notes: dict[str, Any] = {}
    with stages(f"{stage_prefix}train teacher"):
        set_seed(seed)
        teacher = build_teacher()
        notes["teacher"] = train(teacher, train_set, recipe.teacher, seed).__dict__
        metric["teacher"] = evaluate(teacher)
    pruner = UPPruner(teacher)
    with stages(f"{stage_prefix}score channels"):
        proxy = build_proxy()
        scores = {
            prefix: pruner.score(proxy, method=method, seed=seed, variants_per_pass=variants_per_pass,
                                 show_progress=False)
            for prefix, method in PRUNING_METHODS.items()
        }
    target = PruningTarget.from_ratio(teacher.config, recipe.width_ratio)
    students: dict[str, PreTrainedModel] = {}
    for prefix, method_scores in scores.items():
        with stages(f"{stage_prefix}{METHOD_NAMES[prefix]}-prune + distil"):
            student = pruner.prune(target, method_scores)
            metric[f"{prefix}_pruned"] = evaluate(student)
            notes[f"{prefix}_distilled"] = train(student, train_set, recipe.student, seed, teacher=teacher,
                                                 alpha=recipe.alpha, temperature=recipe.temperature).__dict__
            metric[f"{prefix}_distilled"] = evaluate(student)
            students[prefix] = student
    with stages(f"{stage_prefix}scratch + distil"):
        scratch = scratch_copy(students["up"], seed)
        notes["scratch"] = train(scratch, train_set, recipe.student, seed, teacher=teacher,
                                 alpha=recipe.alpha, temperature=recipe.temperature).__dict__
        metric["scratch"] = evaluate(scratch)
    return metric, notes, teacher, students["up"]
