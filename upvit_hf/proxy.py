"""Proxy sets: the N random training samples UP-ViTs scores channels on (paper: 2000 images).

Both kinds read only what they need: N images (plus a shuffle buffer) of a streamed dataset, and documents of
a text source tokenized one at a time until N sequences' worth of tokens are collected.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import torch
from datasets import Dataset, IterableDataset

from .evaluation.data import SHUFFLE_BUFFER, check_columns, convert_images


def sample(dataset: Dataset | IterableDataset, size: int, seed: int,
           buffer_size: int = SHUFFLE_BUFFER) -> Dataset | IterableDataset:
    """`size` seeded random rows (all rows if there are fewer). A streamed dataset is shuffled through a
    `buffer_size` buffer and cut after `size` rows, so about size + buffer_size rows are ever read."""
    if size < 1:
        raise ValueError(f"the proxy size must be >= 1, got {size}")
    if isinstance(dataset, IterableDataset):
        return dataset.shuffle(seed=seed, buffer_size=buffer_size).take(size)
    return dataset.shuffle(seed=seed).select(range(min(size, len(dataset))))


def image_proxy(dataset: Dataset | IterableDataset, processor: Any, *, size: int = 2000, seed: int = 0,
                batch_size: int = 64, image_column: str = "image", num_channels: int = 3,
                buffer_size: int = SHUFFLE_BUFFER) -> list[dict[str, torch.Tensor]]:
    """Batches of `pixel_values` for `size` random images, preprocessed by the model's image processor.

    Images are converted to the model's `num_channels` first (`config.num_channels`: ImageNet holds
    greyscale and CMYK JPEGs, and a 1-channel model's processor normalizes one channel).
    """
    if batch_size < 1:
        raise ValueError(f"the batch size must be >= 1, got {batch_size}")
    check_columns(dataset, [image_column])
    rows = iter(sample(dataset, size, seed, buffer_size))
    batches = []
    while chunk := list(islice(rows, batch_size)):
        check_columns(chunk[0], [image_column])
        images = convert_images([row[image_column] for row in chunk], num_channels)
        batches.append({"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]})
    if not batches:
        raise ValueError("the proxy dataset is empty")
    return batches


def tokenize_documents(documents: Iterable[str], tokenizer: Any, num_tokens: int) -> torch.Tensor:
    """One token stream from `documents`, tokenized one document at a time until `num_tokens` tokens are
    collected or the documents run out (the rest of the corpus is never read)."""
    pieces: list[list[int]] = []
    collected = 0
    for document in documents:
        if not document or document.isspace():
            continue
        ids = tokenizer(document)["input_ids"]
        pieces.append(ids)
        collected += len(ids)
        if collected >= num_tokens:
            break
    return torch.tensor([token for piece in pieces for token in piece], dtype=torch.long)


def document_proxy(documents: Iterable[str], tokenizer: Any, *, size: int = 2000, seq_len: int = 512,
                   seed: int = 0, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Batches of `size` sequences of `seq_len` tokens from documents tokenized only as far as needed:
    consecutive windows when the documents hold size·seq_len tokens, else seeded random windows
    (`text_proxy`) of what they hold."""
    if size < 1 or seq_len < 1 or batch_size < 1:
        raise ValueError(f"the proxy size, sequence length and batch size must be >= 1, "
                         f"got {size}, {seq_len} and {batch_size}")
    token_ids = tokenize_documents(documents, tokenizer, size * seq_len)
    if token_ids.numel() < size * seq_len:
        return text_proxy(token_ids, size=size, seq_len=seq_len, seed=seed, batch_size=batch_size)
    windows = token_ids[: size * seq_len].view(size, seq_len)
    return _token_batches(windows, batch_size)


def text_proxy(token_ids: torch.Tensor, *, size: int = 2000, seq_len: int = 512, seed: int = 0,
               batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Batches of `input_ids`: `size` windows of `seq_len` tokens at seeded random offsets of a token stream."""
    if size < 1 or seq_len < 1 or batch_size < 1:
        raise ValueError(f"the proxy size, sequence length and batch size must be >= 1, "
                         f"got {size}, {seq_len} and {batch_size}")
    if token_ids.numel() < seq_len:
        raise ValueError(f"the text has {token_ids.numel()} tokens, fewer than one sequence of {seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, token_ids.numel() - seq_len + 1, (size,), generator=generator)
    return _token_batches(torch.stack([token_ids[s:s + seq_len] for s in starts.tolist()]), batch_size)


def _token_batches(windows: torch.Tensor, batch_size: int) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": chunk, "attention_mask": torch.ones_like(chunk)} for chunk in windows.split(batch_size)]
