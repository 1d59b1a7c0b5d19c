"""What every module that runs a model shares: where its parameters live, the logits of its output, the label
id that losses skip, and the preprocessor saved with it. One home, so evaluation, distillation and the CLI
agree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100
"""Label id skipped by losses and metrics (the transformers / PyTorch convention)."""


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first parameter (float32 for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None else torch.float32


def load_processor(name_or_path: str | os.PathLike, modality: str) -> Any:
    """The image processor (image models) or tokenizer (text models) saved with a model; ValueError naming what
    is missing."""
    from transformers import AutoImageProcessor, AutoTokenizer

    what, auto = ("image processor", AutoImageProcessor) if modality == "image" else ("tokenizer", AutoTokenizer)
    try:
        return auto.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{str(name_or_path)!r} has no {what}; save one next to the model") from err


def logits_of(output: Any) -> torch.Tensor | None:
    """The `logits` of a model output: a `ModelOutput` / mapping (None when it has none) or a tuple whose first
    item is the logits (`return_dict=False`)."""
    if isinstance(output, Mapping):
        return output.get("logits")
    if isinstance(output, (tuple, list)):
        return output[0]
    return getattr(output, "logits", None)
