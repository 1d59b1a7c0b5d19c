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


def gpt2_config(**overrides):
    from transformers import GPT2Config

    params = dict(
        vocab_size=23, n_positions=12, n_embd=8, n_layer=2, n_head=2, n_inner=12, layer_norm_epsilon=1e-5,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, num_labels=3,
    )
    params.update(overrides)
    return GPT2Config(**params)


def randomize_gpt2(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """`randomize`, with GPT-2's LayerNorms (`ln_1`, `ln_2`, `ln_f`) given weights around 1."""
    randomize(model, seed, std)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                param.copy_(1 + 0.4 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


def token_batches(config, lengths=((6, 4, 5), (6, 6)), seed=1) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches of random token ids (pad = config.pad_token_id, never drawn as a token)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for per_row in lengths:
        width = max(per_row)
        ids = torch.full((len(per_row), width), config.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(per_row), width, dtype=torch.long)
        for row, n in enumerate(per_row):
            ids[row, :n] = torch.randint(config.pad_token_id + 1, config.vocab_size, (n,), generator=generator)
            mask[row, :n] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches
