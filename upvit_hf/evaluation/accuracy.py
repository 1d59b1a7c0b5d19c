"""Top-1/top-5 accuracy of an image classifier on a `datasets` split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from torch import nn
from torch.utils.data import DataLoader
from transformers.utils.logging import tqdm

from ..model_io import load_processor, model_device, model_dtype
from .data import check_columns, convert_images, model_channels
from .metrics import TopKAccuracy


def resolve_image_processor(model: nn.Module, processor: Any | None = None) -> Any:
    """Use the given processor, else the one saved with the model; fail clearly for in-memory models."""
    if processor is not None:
        return processor
    source = getattr(getattr(model, "config", None), "_name_or_path", "") or getattr(model, "name_or_path", "")
    if not source:
        raise ValueError("The model has no name_or_path to load an image processor from; pass processor=...")
    return load_processor(source, "image")


@dataclass
class _ImageCollator:
    """Turns examples into (pixel_values, labels); a class so DataLoader workers can pickle it."""

    processor: Any
    image_column: str
    label_column: str
    num_channels: int

    def __call__(self, examples: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        check_columns(examples[0], [self.image_column, self.label_column])
        images = convert_images([example[self.image_column] for example in examples], self.num_channels)
        labels = torch.tensor([int(example[self.label_column]) for example in examples], dtype=torch.long)
        pixel_values = self.processor(images=images, return_tensors="pt")["pixel_values"]
        return pixel_values, labels


def evaluate_accuracy(
    model: nn.Module,
    dataset: Dataset | IterableDataset,
    processor: Any | None = None,
    *,
    image_column: str = "image",
    label_column: str = "label",
    batch_size: int = 64,
    top_k: Sequence[int] = (1, 5),
    max_samples: int | None = None,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Top-k accuracies (keys `top1`, `top5`, ...) and `num_samples` of `model` on `dataset`.

    Dataset labels must use the model's class ids (true for ImageNet-1k and the Hub ViT/DeiT heads). A k larger
    than the number of classes counts every sample as a hit.
    """
    check_columns(dataset, [image_column, label_column])
    processor = resolve_image_processor(model, processor)
    if max_samples is not None:
        dataset = dataset.take(max_samples) if isinstance(dataset, IterableDataset) else dataset.select(
            range(min(max_samples, len(dataset)))
        )
    total = len(dataset) if isinstance(dataset, Dataset) else max_samples
    device = torch.device(device) if device is not None else model_device(model)
    dtype = model_dtype(model)
    collate = _ImageCollator(processor, image_column, label_column, model_channels(model))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)

    metric = TopKAccuracy()
    max_k = max(top_k)
    seen = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=total, desc="accuracy", unit="img", disable=not progress) as bar:
            for pixel_values, labels in loader:
                logits = model(pixel_values=pixel_values.to(device=device, dtype=dtype)).logits
                num_classes = logits.shape[-1]
                if labels.min() < 0 or labels.max() >= num_classes:
                    raise ValueError(
                        f"Label(s) outside the model's {num_classes} classes in column {label_column!r} "
                        f"(got {labels.min().item()}..{labels.max().item()}); unlabeled split?"
                    )
                ranked = logits.float().topk(min(max_k, num_classes), dim=-1).indices.cpu()
                metric.add_batch(predictions=ranked.tolist(), references=labels.tolist())
                seen += len(labels)
                bar.update(len(labels))
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("The dataset is empty; nothing to evaluate.")
    return {**metric.compute(top_k=top_k), "num_samples": seen}
