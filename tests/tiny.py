"""Tiny random models for tests: no downloads, randomized LayerNorms (default ones hide LN bugs)."""

from __future__ import annotations

import torch
from transformers import DeiTConfig, ViTConfig


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Weights large enough that outputs depend visibly on every channel; LayerNorm affine ≠ (1, 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.4 * noise)
            else:
                param.copy_(std * noise)
    return model.eval()


def vit_config(cls=ViTConfig, **overrides):
    params = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24, image_size=8,
        patch_size=4, num_channels=3, num_labels=5, layer_norm_eps=1e-6,
    )
    params.update(overrides)
    return cls(**params)


def deit_config(**overrides):
    return vit_config(DeiTConfig, **overrides)


def image_batches(config, sizes=(3, 2), seed=1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.randn(n, config.num_channels, config.image_size, config.image_size, generator=generator),
            "labels": torch.zeros(n, dtype=torch.long),
        }
        for n in sizes
    ]
