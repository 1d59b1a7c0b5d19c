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

from ..adapters import adapter_class_for_config
from ..model_io import model_device, model_dtype


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's config allows (None where it sets no limit), as its adapter reads it."""
    return adapter_class_for_config(model.config).max_positions(model.config)


def dummy_inputs(
    model: nn.Module,
    batch_size: int = 1,
    *,
    seq_len: int = 128,
    image_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Random inputs of the model's shape, on its device: `pixel_values` for image models, `input_ids` for text
    models (`seq_len` capped at the model's maximum positions so small models still run)."""
    return adapter_class_for_config(model.config).dummy_inputs(
        model.config, batch_size, seq_len=seq_len, image_size=image_size, device=model_device(model),
        dtype=model_dtype(model),
    )


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
