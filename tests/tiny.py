"""Tiny random models for tests: no downloads, randomized LayerNorms (default ones hide LN bugs)."""

from __future__ import annotations

import torch
from transformers import DeiTConfig, ViTConfig


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Weights large enough that outputs depend visibly on every channel; LayerNorm affine ≠ (1, 0)."""
    generator = torch.Generator().manual_seed(seed)
    norm_weights = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    with torch.no_grad():
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(1 + 0.4 * noise if id(param) in norm_weights else std * noise)
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
    size = config.image_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return [
        {
            "pixel_values": torch.randn(n, config.num_channels, height, width, generator=generator),
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



WORDS = "the cat dog sat ran on a mat log and it was big small red blue".split()


def tiny_tokenizer():
    """A word-level tokenizer over `WORDS` (pad 0, unk 1, eos 2), as a stock PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                   model_max_length=12)


def word_corpus(n_lines: int = 40, seed: int = 0) -> str:
    """Random lines of `WORDS`, some empty."""
    g = torch.Generator().manual_seed(seed)
    lines = [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(n),), generator=g))
             for n in torch.randint(0, 9, (n_lines,), generator=g)]
    return "\n".join(lines) + "\n"


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


def pvt_v2_config(**overrides):
    """Two stages: stage 0 reduces keys/values spatially (sr 2), stage 1 does not (sr 1)."""
    from transformers import PvtV2Config

    params = dict(
        image_size=16, num_channels=3, num_encoder_blocks=2, depths=[2, 2], sr_ratios=[2, 1], hidden_sizes=[8, 12],
        patch_sizes=[3, 3], strides=[2, 2], num_attention_heads=[2, 3], mlp_ratios=[2, 2], num_labels=5,
        layer_norm_eps=1e-6, qkv_bias=True,
    )
    params.update(overrides)
    return PvtV2Config(**params)
