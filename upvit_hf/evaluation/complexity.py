"""Parameter and FLOP counts, and the dummy inputs they (and throughput) run on.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts matmul/conv/attention kernels
(2·m·n·k per matmul; element-wise ops and bias adds are not counted), so numbers match what papers usually
quote as FLOPs = 2 × MACs. Counting runs scaled-dot-product attention on its math backend: the fused CPU
kernel is invisible to the counter, and the math form has the same attention FLOPs as any other kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's config allows, if it says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def dummy_inputs(
    model: nn.Module,
    batch_size: int = 1,
    *,
    seq_len: int = 128,
    image_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Random model inputs read off the config: `pixel_values` for vision configs, `input_ids` otherwise.

    `seq_len` is capped at the model's maximum positions so small models still run.
    """
    config = getattr(model, "config", None)
    device, dtype = _input_device_dtype(model)
    size = image_size or getattr(config, "image_size", None)
    if size is not None and getattr(config, "num_channels", None) is not None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, config.num_channels, height, width)
        return {"pixel_values": torch.randn(shape, device=device, dtype=dtype)}
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is None:
        raise ValueError("Cannot build dummy inputs: the config has neither image_size/num_channels nor vocab_size")
    seq_len = min(seq_len, max_positions(model) or seq_len)
    return {"input_ids": torch.randint(0, vocab_size, (batch_size, seq_len), device=device)}


def describe_inputs(inputs: Mapping[str, torch.Tensor]) -> str:
    """A short human description of one sample of `inputs`, e.g. '3×224×224 image' or '128 tokens'."""
    if "pixel_values" in inputs:
        return "×".join(str(d) for d in inputs["pixel_values"].shape[1:]) + " image"
    if "input_ids" in inputs:
        return f"{inputs['input_ids'].shape[-1]} tokens"
    return ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in inputs.items())


def _batch_size(inputs: Mapping[str, torch.Tensor]) -> int:
    first = next(iter(inputs.values()))
    return int(first.shape[0])


def count_flops(model: nn.Module, inputs: Mapping[str, torch.Tensor] | None = None, *, seq_len: int = 128) -> int:
    """Forward FLOPs per sample (total over the batch of `inputs` divided by its size)."""
    inputs = dict(inputs) if inputs is not None else dummy_inputs(model, 1, seq_len=seq_len)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
            model(**inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // _batch_size(inputs)


def model_stats(model: nn.Module, *, seq_len: int = 128) -> dict[str, int | str]:
    """`params`, per-sample forward `flops` and the input they were counted on (`flops_input`)."""
    inputs = dummy_inputs(model, 1, seq_len=seq_len)
    return {
        "params": count_parameters(model),
        "flops": count_flops(model, inputs),
        "flops_input": describe_inputs(inputs),
    }
