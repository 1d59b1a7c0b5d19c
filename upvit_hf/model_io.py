"""What every module that runs a model shares: where its parameters live, the logits of its output, the label
id that losses skip, and the preprocessor saved with it. One home, so evaluation, distillation and the CLI
agree."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

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
    is missing. A text model whose tokenizer only an older transformers can read gets the one its adapter
    converts (Transformer-XL's ``vocab.pkl``), in memory: the model folder is not touched."""
    from transformers import AutoImageProcessor, AutoTokenizer

    what, auto = ("image processor", AutoImageProcessor) if modality == "image" else ("tokenizer", AutoTokenizer)
    try:
        return auto.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        converted = _legacy_tokenizer(name_or_path) if modality == "text" else None
        if converted is None:
            raise ValueError(f"{str(name_or_path)!r} has no {what}; save one next to the model") from err
        return converted


def _legacy_tokenizer(name_or_path: str | os.PathLike) -> Any | None:
    """The tokenizer the model's adapter converts from files an older transformers saved, or None."""
    from transformers import AutoConfig

    from .adapters import adapter_class_for_config

    try:
        adapter = adapter_class_for_config(AutoConfig.from_pretrained(name_or_path))
    except (OSError, ValueError):  # no config, or a family without an adapter: nothing to convert
        return None
    tokenizer = adapter.legacy_tokenizer(str(name_or_path))  # a refused vocabulary raises ValueError
    if tokenizer is not None:
        logger.warning(f"{name_or_path}: no tokenizer transformers 5 can load; converted the 4.x vocabulary")
    return tokenizer


def logits_of(output: Any) -> torch.Tensor | None:
    """The `logits` of a model output: a `ModelOutput` / mapping (None when it has none) or a tuple whose first
    item is the logits (`return_dict=False`)."""
    if isinstance(output, Mapping):
        return output.get("logits")
    if isinstance(output, (tuple, list)):
        return output[0]
    return getattr(output, "logits", None)
