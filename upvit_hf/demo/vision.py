"""Vision half of the demo: a small ViT on 8×8 digits, UP-pruned to three widths.

One teacher; per seed, every criterion at every width, distilled with checkpoints, next to the same
architectures trained from random init (see `protocol`). Accuracy is on the fixed held-out test split.
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
from .protocol import stage_count, sweep
from .recipe import VisionRecipe, as_dict, check_recipe
from .rows import summarize, target_entries


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
    """Run the sweep, measure every architecture, save and reload the teacher and the UP students."""
    check_recipe(recipe)
    stages = Stages("vision (ViT on digits)", stage_count(recipe) + 2, show_progress)
    splits = load_digit_splits()
    train_set = TensorDictDataset(
        pixel_values=splits.pixel_values(splits.train), labels=torch.tensor(splits.train["label"])
    )
    result = sweep(
        lambda: ViTForImageClassification(teacher_config(recipe)),
        train_set,
        lambda seed: image_proxy(splits.train, splits.processor, size=recipe.proxy_size, seed=seed, num_channels=1),
        lambda model: accuracy(model, splits),
        recipe, stages, variants_per_pass=32,
    )
    models = {"teacher": result.teacher, **result.students}
    with stages("measure params / FLOPs / throughput"):
        costs = {name: measure_cost(model, batch_size=recipe.throughput_batch) for name, model in models.items()}
    with stages("save + reload"):
        root = Path(output_dir)
        test_images = list(splits.test["image"])[:64]

        def pixels(processor: Any) -> dict[str, torch.Tensor]:
            return {"pixel_values": processor(images=test_images, return_tensors="pt")["pixel_values"]}

        saved = {
            name: save_and_reload(model, splits.processor, root / "vision" / f"{name}-vit-digits",
                                  AutoModelForImageClassification.from_pretrained,
                                  AutoImageProcessor.from_pretrained, pixels, root)
            for name, model in models.items()
        }
    stages.close()
    return {
        "task": "digits (scikit-learn load_digits, 8×8 greyscale, 10 classes)",
        "metric": "accuracy",
        "higher_is_better": True,
        "setup": {
            "recipe": as_dict(recipe),
            "train_images": len(splits.train),
            "test_images": len(splits.test),
            "teacher_widths": adapter_for(result.teacher).widths.as_dict(),
            "scratch_recipe": "same architecture, random init, same steps and CE + alpha*T^2*KL loss as the "
                              "pruned students",
        },
        "teacher": {**costs["teacher"].to_dict(), "accuracy": summarize([result.teacher_metric]),
                    "training": result.teacher_run},
        "targets": target_entries(result, recipe, costs, higher_is_better=True),
        "saved_models": saved,
        "stage_seconds": stages.seconds,
    }
