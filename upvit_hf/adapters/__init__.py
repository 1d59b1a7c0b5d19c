"""Model-family adapters and their registry, keyed by `config.model_type`.

Everything outside `adapters/` asks about a family through this registry: which adapter reads a config
(`adapter_class_for_config`), which one drives a model (`adapter_for`), which class a checkpoint is
(`load_pretrained`). Supporting a new family means adding one adapter class to `ADAPTERS`.
"""

from __future__ import annotations

import os

from transformers import PretrainedConfig, PreTrainedModel

from .base import (
    AnyWidths,
    ModelAdapter,
    NormRefit,
    ParamSlice,
    RefitMap,
    StagedWidths,
    Widths,
    from_stages,
    layer_stages,
    layer_widths,
)
from .gpt2 import GPT2Adapter
from .pvt_v2 import PvtV2Adapter
from .transfo_xl import TransfoXLAdapter
from .vit import ViTAdapter

ADAPTERS: list[type[ModelAdapter]] = [ViTAdapter, GPT2Adapter, TransfoXLAdapter, PvtV2Adapter]

REGISTRY: dict[str, type[ModelAdapter]] = {t: adapter for adapter in ADAPTERS for t in adapter.model_types}
"""`config.model_type` -> the adapter of that family."""


def supported_classes() -> str:
    """The names of every supported model class, for error messages."""
    return ", ".join(cls.__name__ for adapter in ADAPTERS for cls in adapter.model_classes)


def adapter_class_for_config(config: PretrainedConfig) -> type[ModelAdapter]:
    """The adapter of `config.model_type`; ValueError naming the supported model types otherwise."""
    adapter = REGISTRY.get(getattr(config, "model_type", None))
    if adapter is None:
        raise ValueError(
            f"model_type {getattr(config, 'model_type', None)!r} is not supported; "
            f"supported model types: {', '.join(REGISTRY)}"
        )
    return adapter


def adapter_for(model: PreTrainedModel) -> ModelAdapter:
    """The adapter for `model`'s family; ValueError naming the supported classes otherwise."""
    adapter = REGISTRY.get(getattr(getattr(model, "config", None), "model_type", None))
    if adapter is None or type(model) not in adapter.model_classes:
        raise ValueError(f"{type(model).__name__} is not supported; supported models: {supported_classes()}")
    return adapter(model)


def load_pretrained(name_or_path: str | os.PathLike, config: PretrainedConfig | None = None,
                    **kwargs) -> PreTrainedModel:
    """`from_pretrained` with the class the checkpoint was saved as (`config.architectures`), so no head is
    dropped or re-initialized; ValueError for a class no adapter supports (naming the supported ones)."""
    if config is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name_or_path)
    adapter = REGISTRY.get(getattr(config, "model_type", None))
    model_class = adapter.model_class_for_config(config) if adapter is not None else None
    if model_class is None:
        name = (getattr(config, "architectures", None) or [f"model_type {getattr(config, 'model_type', None)!r}"])[0]
        raise ValueError(f"{name} is not supported; supported models: {supported_classes()}")
    return model_class.from_pretrained(name_or_path, config=config, **kwargs)


__all__ = [
    "ADAPTERS",
    "REGISTRY",
    "AnyWidths",
    "ModelAdapter",
    "NormRefit",
    "ParamSlice",
    "RefitMap",
    "StagedWidths",
    "Widths",
    "adapter_class_for_config",
    "adapter_for",
    "from_stages",
    "layer_stages",
    "layer_widths",
    "load_pretrained",
    "supported_classes",
]
