"""Inference throughput (images/s, tokens/s) at a fixed batch size.

Warm-up iterations absorb one-off costs (allocator growth, kernel selection, lazy init) before timing, and
CUDA is synchronized around the timed region because kernel launches are asynchronous.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..adapters import adapter_class_for_config
from .complexity import dummy_inputs


@dataclass(frozen=True)
class ThroughputResult:
    """Items (images or tokens) per second, and how it was measured."""

    items_per_second: float
    unit: str
    batch_size: int
    seconds_per_batch: float
    iterations: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    *,
    items_per_batch: int,
    unit: str,
    warmup: int = 3,
    iterations: int = 10,
) -> ThroughputResult:
    """Time `iterations` forward passes on `inputs` (after `warmup` untimed ones) under inference mode."""
    if iterations < 1 or warmup < 0:
        raise ValueError(f"need iterations >= 1 and warmup >= 0, got {iterations} and {warmup}")
    first = next(iter(inputs.values()))
    device = first.device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(**inputs)
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(iterations):
                model(**inputs)
            _synchronize(device)
            elapsed = time.perf_counter() - start
    finally:
        model.train(was_training)
    per_batch = elapsed / iterations
    return ThroughputResult(
        items_per_second=items_per_batch / per_batch if per_batch > 0 else float("inf"),
        unit=unit,
        batch_size=int(first.shape[0]),
        seconds_per_batch=per_batch,
        iterations=iterations,
    )


def image_throughput(
    model: nn.Module,
    batch_size: int = 64,
    *,
    image_size: int | None = None,
    warmup: int = 3,
    iterations: int = 10,
) -> ThroughputResult:
    """Images per second of a vision model on random images of the config's size (on the model's device)."""
    if adapter_class_for_config(model.config).modality != "image":
        raise ValueError(f"image_throughput needs an image model, got {type(model).__name__}")
    inputs = dummy_inputs(model, batch_size, image_size=image_size)
    return measure_throughput(
        model, inputs, items_per_batch=batch_size, unit="images/s", warmup=warmup, iterations=iterations
    )


def token_throughput(
    model: nn.Module,
    batch_size: int = 8,
    *,
    seq_len: int = 128,
    warmup: int = 3,
    iterations: int = 10,
) -> ThroughputResult:
    """Tokens per second of a language model on random sequences of `seq_len` (capped at the model's maximum)."""
    if adapter_class_for_config(model.config).modality != "text":
        raise ValueError(f"token_throughput needs a text model, got {type(model).__name__}")
    inputs = dummy_inputs(model, batch_size, seq_len=seq_len)
    tokens = inputs["input_ids"].numel()
    return measure_throughput(
        model, inputs, items_per_batch=tokens, unit="tokens/s", warmup=warmup, iterations=iterations
    )
