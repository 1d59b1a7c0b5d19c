"""Vision half of the demo: a small ViT on 8×8 digits, UP-pruned to about a quarter of its FLOPs.

Per seed: train the teacher, score its channels (KL on a proxy subset of the training split, magnitude,
random), cut each to the same widths and distil each for the same steps; also train the same architecture
from random init with the same recipe. Accuracy is on the fixed held-out test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from ..adapters import adapter_for
from ..evaluation import evaluate_accuracy
from ..proxy import image_proxy
from .data import DigitsSplits, TensorDictDataset, load_digit_splits
from .export import save_and_reload
from .measure import measure_cost
from .progress import Stages
from .protocol import STAGES as COMPARISON_STAGES
from .protocol import compare
from .recipe import VisionRecipe, as_dict
from .rows import ROW_LABELS, make_row



def teacher_config(recipe: VisionRecipe) -> ViTConfig:
    return ViTConfig(
        image_size=8, patch_size=recipe.patch_size, num_channels=1, num_labels=10,
        hidden_size=recipe.hidden_size, num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads, intermediate_size=recipe.intermediate_size,
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )



def accuracy(model: ViTForImageClassification, splits: DigitsSplits) -> float:
    return evaluate_accuracy(model, splits.test, splits.processor, top_k=(1,), batch_size=512, progress=False)["top1"]


def run_vision(output_dir: Path, recipe: VisionRecipe, show_progress: bool = True) -> dict[str, Any]:
    """Run every seed, measure both architectures, save and reload the first seed's models."""
    stages = Stages("vision (ViT on digits)", COMPARISON_STAGES * len(recipe.seeds) + 2, show_progress)
    splits = load_digit_splits()
    train_set = TensorDictDataset(
        pixel_values=splits.pixel_values(splits.train), labels=torch.tensor(splits.train["label"])
    )
    per_seed: list[dict[str, float]] = []
    notes: list[dict[str, Any]] = []
    first: tuple[ViTForImageClassification, ViTForImageClassification] | None = None
    for seed in recipe.seeds:
        acc, seed_notes, teacher, student = compare(
            lambda: ViTForImageClassification(teacher_config(recipe)),
            train_set,
            lambda: image_proxy(splits.train, splits.processor, size=recipe.proxy_size, seed=seed, num_channels=1),
            lambda model: accuracy(model, splits),
            recipe, seed, stages, variants_per_pass=32, stage_prefix=f"seed {seed}: ",
        )
        per_seed.append(acc)
        notes.append({"seed": seed, **seed_notes})
        first = first or (teacher, student)
    teacher, student = first

    with stages("measure params / FLOPs / throughput"):
        costs = {arch: measure_cost(model, batch_size=recipe.throughput_batch)
                 for arch, model in (("teacher", teacher), ("pruned", student))}
    with stages("save + reload"):
        root = Path(output_dir)
        test_images = list(splits.test["image"])[:64]

        def pixels(processor: Any) -> dict[str, torch.Tensor]:
            return {"pixel_values": processor(images=test_images, return_tensors="pt")["pixel_values"]}

        saved = {
            name: save_and_reload(model, splits.processor, root / "vision" / folder,
                                  AutoModelForImageClassification.from_pretrained,
                                  AutoImageProcessor.from_pretrained, pixels, root)
            for name, model, folder in (("teacher", teacher, "teacher-vit-digits"),
                                        ("up_distilled", student, "up-vit-digits"))
        }
    stages.close()

    rows = [
        make_row(key, costs["teacher" if key == "teacher" else "pruned"], "accuracy", [acc[key] for acc in per_seed])
        for key in ROW_LABELS
    ]
    return {
        "task": "digits (scikit-learn load_digits, 8×8 greyscale, 10 classes)",
        "metric": "accuracy",
        "higher_is_better": True,
        "setup": {
            "recipe": as_dict(recipe),
            "train_images": len(splits.train),
            "test_images": len(splits.test),
            "teacher_widths": adapter_for(teacher).widths.as_dict(),
            "pruned_widths": adapter_for(student).widths.as_dict(),
            "flops_ratio": costs["pruned"].flops / costs["teacher"].flops,
            "scratch_recipe": "same architecture, random init, same steps and CE + alpha*T^2*KL loss as the "
                              "pruned students",
        },
        "rows": rows,
        "training": notes,
        "saved_models": saved,
        "stage_seconds": stages.seconds,
    }

