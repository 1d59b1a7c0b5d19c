"""Save a pruned model with its processor and prove that stock `from_pretrained` gives it back exactly."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.utils import logging

from ..atomic import atomic_path

LOGIT_TOLERANCE = 1e-5


def save_and_reload(
    model: PreTrainedModel,
    processing: Any,
    path: Path,
    load_model: Callable[[str], PreTrainedModel],
    load_processing: Callable[[str], Any],
    make_inputs: Callable[[Any], Mapping[str, torch.Tensor]],
    root: Path,
) -> dict[str, Any]:
    """Write `model` and `processing` (image processor or tokenizer) to `path` atomically, reload both with
    the given stock loaders, and compare logits on inputs each side builds with its own processor."""
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # per-shard save/load bars would drown the demo's one bar per section
    try:
        with atomic_path(path, directory=True) as tmp:
            model.save_pretrained(tmp)
            processing.save_pretrained(tmp)
        reloaded = load_model(str(path)).eval()
        reloaded_processing = load_processing(str(path))
    finally:
        if bars:
            logging.enable_progress_bar()
    model.eval()
    with torch.inference_mode():
        expected = model(**make_inputs(processing)).logits
        actual = reloaded(**make_inputs(reloaded_processing)).logits
    same_shape = expected.shape == actual.shape
    diff = (expected - actual).abs().max().item() if same_shape else float("inf")
    return {
        "path": str(path.relative_to(root)),
        "model_class": type(reloaded).__name__,
        "processor_class": type(reloaded_processing).__name__,
        "reload_ok": bool(type(reloaded) is type(model) and same_shape and diff <= LOGIT_TOLERANCE),
        "max_abs_logit_diff": diff,
    }
