"""The pruning record kept in a pruned model's config (`config.upvit_pruning`): it survives
`save_pretrained`, tells a reader what was done, and feeds the model card."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from .adapters import AnyWidths

RECORD_KEY = "upvit_pruning"


def updated_record(model: PreTrainedModel, original: AnyWidths, pruned: AnyWidths, step: dict[str, Any]) -> dict[str, Any]:
    """The record of `model` (empty if it was never pruned) extended by one pruning step."""
    from . import __version__

    previous = getattr(model.config, RECORD_KEY, None) or {}
    step = {**step, "from": original.as_dict(), "to": pruned.as_dict()}
    return {
        "base_model": previous.get("base_model") or model.name_or_path or None,
        "original": previous.get("original", original.as_dict()),
        "pruned": pruned.as_dict(),
        "method": step.get("method", previous.get("method")),
        "proxy_size": step.get("proxy_size", previous.get("proxy_size")),
        "steps": [*previous.get("steps", []), step],
        "upvit_hf_version": __version__,
    }
