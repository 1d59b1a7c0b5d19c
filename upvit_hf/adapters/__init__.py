"""Model-family adapters. Supporting a new family means adding one adapter class to `ADAPTERS`."""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from .base import ModelAdapter, ParamSlice, RefitMap, Widths
from .gpt2 import GPT2Adapter
from .transfo_xl import TransfoXLAdapter
from .vit import ViTAdapter

ADAPTERS: list[type[ModelAdapter]] = [ViTAdapter, GPT2Adapter, TransfoXLAdapter]


def _supported_classes() -> str:
    return ", ".join(cls.__name__ for adapter in ADAPTERS for cls in adapter.model_classes)


def adapter_for(model: PreTrainedModel) -> ModelAdapter:
    """The adapter for `model`'s family; ValueError naming the supported classes otherwise."""
    for adapter in ADAPTERS:
        if type(model) in adapter.model_classes:
            return adapter(model)
    raise ValueError(f"{type(model).__name__} is not supported; supported models: {_supported_classes()}")


def adapter_class_for_config(config: PretrainedConfig) -> type[ModelAdapter]:
    """The adapter class that reads widths from a config of this `model_type`."""
    for adapter in ADAPTERS:
        if config.model_type in adapter.model_types:
            return adapter
    known = ", ".join(t for adapter in ADAPTERS for t in adapter.model_types)
    raise ValueError(f"model_type {config.model_type!r} is not supported; supported model types: {known}")


__all__ = ["ADAPTERS", "ModelAdapter", "ParamSlice", "RefitMap", "Widths", "adapter_class_for_config", "adapter_for"]
