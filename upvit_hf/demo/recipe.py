"""Model sizes and training budgets of the demo, full and quick.

Sizes are set by the time budget (full run ≤ 15 minutes on 2 CPU cores, quick ≤ 3 minutes), not tuned for
the result: every student — UP-pruned, magnitude-pruned, random-pruned, random init — gets the same
optimizer, schedule, number of steps and loss, so only the starting weights differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainRecipe:
    """One Trainer run: AdamW with linear warm-up and cosine decay, no checkpoints."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1


@dataclass(frozen=True)
class VisionRecipe:
    """A small ViT on 8×8 digits (16 patches of 2×2 + [CLS]) pruned to a quarter of its FLOPs."""

    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 128
    patch_size: int = 2
    teacher: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=800, batch_size=64, learning_rate=1e-3))
    student: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=150, batch_size=64, learning_rate=1e-3))
    width_ratio: float = 0.5  # every width halves: ~1/4 of the linear-layer FLOPs
    proxy_size: int = 128  # training images the KL scores are summed over (paper: 2000 of ImageNet's 1.28M)
    alpha: float = 1.0  # weight of the KL term (paper Eq. 2)
    temperature: float = 1.0  # T = 1 is the paper's form
    throughput_batch: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class LanguageRecipe:
    """A small GPT-2 on word-level Penn Treebank (10k-word vocabulary) pruned to half its width."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_inner: int = 256
    block_size: int = 64
    dropout: float = 0.0  # every run sees less than one epoch: nothing to regularize against
    teacher: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=1000, batch_size=16, learning_rate=3e-3))
    student: TrainRecipe = field(default_factory=lambda: TrainRecipe(steps=160, batch_size=16, learning_rate=3e-3))
    width_ratio: float = 0.5
    proxy_sequences: int = 4
    proxy_length: int = 64  # proxy tokens = sequences × length; KL is summed over every position
    # (each proxy token costs one readout over the 10k vocabulary per scored channel: ~700 channels)
    alpha: float = 1.0
    temperature: float = 1.0
    eval_stride: int = 64  # = block_size: non-overlapping windows (half the cost of stride 32)
    max_test_tokens: int | None = None  # None: the whole test split
    throughput_batch: int = 16
    seed: int = 0


def vision_recipe(quick: bool = False) -> VisionRecipe:
    if not quick:
        return VisionRecipe()
    return VisionRecipe(
        teacher=TrainRecipe(steps=150, batch_size=64, learning_rate=2e-3),
        student=TrainRecipe(steps=40, batch_size=64, learning_rate=2e-3),
        proxy_size=16,
        throughput_batch=64,
        seeds=(0,),
    )


def language_recipe(quick: bool = False) -> LanguageRecipe:
    if not quick:
        return LanguageRecipe()
    return LanguageRecipe(
        teacher=TrainRecipe(steps=40, batch_size=8, learning_rate=3e-3),
        student=TrainRecipe(steps=10, batch_size=8, learning_rate=3e-3),
        proxy_sequences=1,
        proxy_length=16,
        max_test_tokens=4096,
        throughput_batch=4,
    )


def as_dict(recipe: Any) -> dict[str, Any]:
    """JSON-ready form of a recipe (tuples become lists)."""
    return asdict(recipe)
