"""Channel masks applied through forward hooks, one mask row per stacked sample.

Removing a residual channel is not zeroing it: every LayerNorm then normalizes over the remaining
channels. Zeroing the channel at every writer into the residual stream and replacing each LayerNorm by a
masked one (statistics over the kept channels, zero output at removed ones) reproduces physical removal
exactly, so many removals can be evaluated in one batched forward pass without building models.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ..adapters import ModelAdapter


def broadcast(mask: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """`mask` [rows, w] shaped to multiply `activation` [rows, ..., k·w] (fused outputs get the mask tiled)."""
    tiles = activation.shape[-1] // mask.shape[-1]
    mask = mask.repeat(1, tiles) if tiles > 1 else mask
    return mask.view(mask.shape[0], *([1] * (activation.dim() - 2)), mask.shape[-1]).to(activation.dtype)


def masked_layer_norm(x: torch.Tensor, mask: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm whose mean and variance are weighted by `mask` (channel weights in [0, 1]), output scaled by it.

    At mask 1 it is the stock LayerNorm; a channel at 0 leaves the statistics and outputs zero, which is the
    LayerNorm of a thinner model (exact removal). In between it is the continuous path Fisher scores
    differentiate along at mask 1.
    """
    m = broadcast(mask, x)
    count = m.sum(-1, keepdim=True)
    mean = (x * m).sum(-1, keepdim=True) / count
    centered = x - mean
    var = (m * centered * centered).sum(-1, keepdim=True) / count
    y = centered * torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        y = y * norm.weight
    if norm.bias is not None:
        y = y + norm.bias
    return y * m


def broadcast_channels_first(mask: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """`mask` [rows, w] shaped to multiply a convolution's `activation` [rows, w, *spatial]."""
    return mask.view(*mask.shape, *([1] * (activation.dim() - 2))).to(activation.dtype)


def _mask_output(mask: torch.Tensor):
    return lambda module, args, output: output * broadcast(mask, output)


def _mask_conv_output(mask: torch.Tensor):
    return lambda module, args, output: output * broadcast_channels_first(mask, output)


def _mask_input(mask: torch.Tensor):
    return lambda module, args: (args[0] * broadcast(mask, args[0]), *args[1:])


def _masked_norm(mask: torch.Tensor):
    return lambda module, args, output: masked_layer_norm(args[0], mask, module)


@contextmanager
def residual_masked(adapter: ModelAdapter, mask: torch.Tensor, stage: int = 0) -> Iterator[None]:
    """Within the block, residual channels of `stage` where `mask` [rows, hidden] is 0 are removed.

    Convolutions (channels first, e.g. PVTv2's patch embeddings) are masked along axis 1, every other
    writer along its last axis. The caller zeroes the channels in the stream where the stage begins
    (the embedding output) itself.
    """
    with ExitStack() as stack:
        for module in adapter.residual_writers(stage):
            hook = _mask_conv_output(mask) if isinstance(module, nn.modules.conv._ConvNd) else _mask_output(mask)
            stack.enter_context(module.register_forward_hook(hook))
        for norm in adapter.residual_norms(stage):
            stack.enter_context(norm.register_forward_hook(_masked_norm(mask)))
        yield


@contextmanager
def attention_masked(adapter: ModelAdapter, layer: int, mask: torch.Tensor) -> Iterator[None]:
    """Within the block, attention dims of `layer` where `mask` [rows, heads·head_dim] is 0 are removed."""
    with ExitStack() as stack:
        for module in adapter.attention_taps(layer):
            stack.enter_context(module.register_forward_hook(_mask_output(mask)))
        yield


@contextmanager
def ffn_masked(adapter: ModelAdapter, layer: int, mask: torch.Tensor) -> Iterator[None]:
    """Within the block, FFN channels of `layer` where `mask` [rows, intermediate] is 0 are removed."""
    with adapter.ffn_tap(layer).register_forward_pre_hook(_mask_input(mask)):
        yield


@contextmanager
def channels_masked(adapter: ModelAdapter, residual: torch.Tensor, attention: list[torch.Tensor],
                    ffn: list[torch.Tensor]) -> Iterator[None]:
    """Every component masked at once (one mask per component and layer, one row per sample).

    The caller scales the embedding output by `residual` itself, as for `residual_masked`.
    """
    with ExitStack() as stack:
        stack.enter_context(residual_masked(adapter, residual))
        for layer, (attention_mask, ffn_mask) in enumerate(zip(attention, ffn)):
            stack.enter_context(attention_masked(adapter, layer, attention_mask))
            stack.enter_context(ffn_masked(adapter, layer, ffn_mask))
        yield
