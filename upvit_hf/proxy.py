"""Proxy sets: the N random training samples UP-ViTs scores channels on (paper: 2000 images)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from datasets import Dataset

from .evaluation.data import check_columns


def sample(dataset: Dataset, size: int, seed: int) -> Dataset:
    """A seeded random subset of `size` rows (all rows if the dataset is smaller)."""
    if size < 1:
        raise ValueError(f"the proxy size must be >= 1, got {size}")
    return dataset.shuffle(seed=seed).select(range(min(size, len(dataset))))


def image_proxy(dataset: Dataset, processor: Any, *, size: int = 2000, seed: int = 0, batch_size: int = 64,
                image_column: str = "image", image_mode: str | None = "RGB") -> list[dict[str, torch.Tensor]]:
    """Batches of `pixel_values` for `size` random images, preprocessed by the model's image processor.

    Images are converted to `image_mode` first (ImageNet holds some greyscale and CMYK JPEGs).
    """
    check_columns(dataset, [image_column])
    subset = sample(dataset, size, seed)
    return list(_image_batches(subset, processor, batch_size, image_column, image_mode))


def _image_batches(subset: Dataset, processor: Any, batch_size: int, image_column: str,
                   image_mode: str | None) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(subset), batch_size):
        images = subset[start:start + batch_size][image_column]
        if image_mode is not None:
            images = [image.convert(image_mode) if image.mode != image_mode else image for image in images]
        yield {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}


def text_proxy(token_ids: torch.Tensor, *, size: int = 2000, seq_len: int = 512, seed: int = 0,
               batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Batches of `input_ids`: `size` windows of `seq_len` tokens at seeded random offsets of a token stream."""
    if size < 1 or seq_len < 1:
        raise ValueError(f"the proxy size and sequence length must be >= 1, got {size} and {seq_len}")
    if token_ids.numel() < seq_len:
        raise ValueError(f"the text has {token_ids.numel()} tokens, fewer than one sequence of {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, token_ids.numel() - seq_len + 1, (size,), generator=generator)
    windows = torch.stack([token_ids[s:s + seq_len] for s in starts.tolist()])
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in windows.split(batch_size)]
