"""Model sizes, pruning targets, seeds and training budgets of the demo, full and quick.

Sizes are set by the time budget (full run ≤ 15 minutes on 2 CPU cores, quick < 1 minute), not tuned for
the result: every student — pruned by any criterion, or the same architecture from random init — gets the
same optimizer, schedule, steps and loss, so only the starting weights differ.

Students train at a constant learning rate after a short warm-up and are evaluated at checkpoints: with no
decay, the model after `short_steps` of the run is exactly the model a `short_steps` run would give, so one
run yields both the short and the long budget (and the accuracy-vs-steps curve).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..targets import PruningTarget
from .methods import methods_for


@dataclass(frozen=True)
class TrainRecipe:
    """One Trainer run: AdamW, linear warm-up, then `schedule` (a transformers scheduler name)."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.01
    warmup_steps: int = 0  # 0: a tenth of the steps
    schedule: str = "cosine"

    @property
    def warmup(self) -> int:
        return self.warmup_steps or max(1, round(0.1 * self.steps))


def student_recipe(steps: int, batch_size: int, learning_rate: float, warmup_steps: int) -> TrainRecipe:
    """Constant learning rate after warm-up: every checkpoint of the run is an honest shorter budget."""
    return TrainRecipe(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                       warmup_steps=warmup_steps, schedule="constant_with_warmup")


@dataclass(frozen=True)
class VisionRecipe:
    """A small ViT on 8×8 digits (16 patches of 2×2 + [CLS]) pruned to three widths.

    Targets run from mild (every head kept, each thinner) to aggressive (4 heads merged into 2, every
    width halved: about a quarter of the FLOPs).
    """

    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    patch_size: int = 2
    targets: dict[str, PruningTarget] = field(default_factory=lambda: {
        "mild": PruningTarget(hidden_size=48, num_attention_heads=4, head_dim=12, intermediate_size=96),
        "medium": PruningTarget(hidden_size=40, num_attention_heads=4, head_dim=8, intermediate_size=80),
        "aggressive": PruningTarget(hidden_size=32, num_attention_heads=2, head_dim=16, intermediate_size=64),
    })
    teacher: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=800, batch_size=64, learning_rate=1e-3))
    student: TrainRecipe = field(default_factory=lambda: student_recipe(100, 64, 1e-3, warmup_steps=5))
    short_steps: int = 20
    eval_steps: tuple[int, ...] = (5, 10, 20, 40, 70, 100)  # checkpoints of every student run (0 is implicit)
    curve_target: str = "mild"  # the target whose accuracy-vs-steps curve the figure shows
    proxy_size: int = 128  # training images the KL scores are summed over (paper: 2000 of ImageNet's 1.28M)
    alpha: float = 1.0  # weight of the KL term (paper Eq. 2)
    temperature: float = 1.0  # T = 1 is the paper's form
    throughput_batch: int = 256
    teacher_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # seeds of proxy sampling, random scores, data order, scratch init
    methods: tuple[str, ...] = ("kl", "fisher", "refined", "magnitude", "random")  # keys of `methods.METHODS`


@dataclass(frozen=True)
class LanguageRecipe:
    """A small GPT-2 on word-level Penn Treebank (10k-word vocabulary) pruned to two widths."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_inner: int = 256
    block_size: int = 64
    dropout: float = 0.0  # every run sees less than one epoch: nothing to regularize against
    targets: dict[str, PruningTarget] = field(default_factory=lambda: {
        "mild": PruningTarget(hidden_size=48, num_attention_heads=4, intermediate_size=192),
        "aggressive": PruningTarget(hidden_size=32, num_attention_heads=2, intermediate_size=128),
    })
    teacher: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=1000, batch_size=16, learning_rate=3e-3))
    student: TrainRecipe = field(default_factory=lambda: student_recipe(50, 16, 3e-3, warmup_steps=3))
    short_steps: int = 10
    eval_steps: tuple[int, ...] = (10, 25, 50)
    curve_target: str = "mild"
    proxy_sequences: int = 4
    proxy_length: int = 64  # proxy tokens = sequences × length; KL is summed over every position
    # (each proxy token costs one readout over the 10k vocabulary per scored channel: ~700 channels)
    alpha: float = 1.0
    temperature: float = 1.0
    eval_stride: int = 64  # = block_size: non-overlapping windows
    max_test_tokens: int | None = 16384  # a fixed test prefix: ~20 evaluations per run must stay cheap
    throughput_batch: int = 16
    teacher_seed: int = 0
    seeds: tuple[int, ...] = (0, 1, 2)
    # a language student costs ~3 vision ones: the criteria the table compares, within the time budget
    methods: tuple[str, ...] = ("kl", "magnitude", "random")


def vision_recipe(quick: bool = False) -> VisionRecipe:
    if not quick:
        return VisionRecipe()
    return VisionRecipe(
        teacher=TrainRecipe(steps=80, batch_size=64, learning_rate=2e-3),
        student=student_recipe(8, 64, 2e-3, warmup_steps=1),
        short_steps=4,
        eval_steps=(4, 8),
        proxy_size=16,
        throughput_batch=64,
        seeds=(0,),
    )


def language_recipe(quick: bool = False) -> LanguageRecipe:
    if not quick:
        return LanguageRecipe()
    return LanguageRecipe(
        teacher=TrainRecipe(steps=20, batch_size=8, learning_rate=3e-3),
        student=student_recipe(4, 8, 3e-3, warmup_steps=1),
        short_steps=2,
        eval_steps=(2, 4),
        proxy_sequences=1,
        proxy_length=8,
        max_test_tokens=2048,
        throughput_batch=4,
        seeds=(0,),
    )


def check_recipe(recipe: VisionRecipe | LanguageRecipe) -> None:
    """ValueError unless the budgets, checkpoints and curve target agree with each other."""
    long = recipe.student.steps
    if sorted(set(recipe.eval_steps)) != list(recipe.eval_steps) or recipe.eval_steps[-1] != long:
        raise ValueError(f"eval_steps must increase and end at the student's {long} steps, got {recipe.eval_steps}")
    if recipe.short_steps not in recipe.eval_steps or recipe.short_steps >= long:
        raise ValueError(f"short_steps={recipe.short_steps} must be a checkpoint below {long}")
    if recipe.student.warmup > recipe.short_steps:
        raise ValueError("the warm-up must end by the short budget")
    if recipe.curve_target not in recipe.targets:
        raise ValueError(f"curve_target {recipe.curve_target!r} is not one of {list(recipe.targets)}")
    if not recipe.seeds:
        raise ValueError("seeds must name at least one seed")
    methods_for(recipe.methods)


def as_dict(recipe: Any) -> dict[str, Any]:
    """JSON-ready form of a recipe (tuples become lists, targets dicts)."""
    return asdict(recipe)
