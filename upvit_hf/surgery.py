"""Pure tensor surgery on a state dict: keep channels along an axis, scale query rows.

Nothing here knows a model family: adapters say which tensors a channel touches (`ParamSlice`), and
these functions slice exactly what they name, returning new tensors (the original model is untouched).
"""

from __future__ import annotations

import torch

from .adapters import ParamSlice

StateDict = dict[str, torch.Tensor]


def keep_channels(state: StateDict, slices: list[ParamSlice], kept: torch.Tensor) -> None:
    """Replace each named tensor by its entries at the kept channels (for every offset of the slice)."""
    for s in slices:
        tensor = state[s.name]
        state[s.name] = tensor.index_select(s.axis, s.indices(kept.to(tensor.device)))


def scale_channels(state: StateDict, slices: list[ParamSlice], width: int, factor: float) -> None:
    """Multiply channels 0 … width−1 of each named tensor by `factor` (folds a changed constant)."""
    for s in slices:
        tensor = state[s.name]
        scale = torch.ones(tensor.shape[s.axis], dtype=tensor.dtype, device=tensor.device)
        scale[s.indices(torch.arange(width, device=tensor.device))] = factor
        shape = [1] * tensor.dim()
        shape[s.axis] = -1
        state[s.name] = tensor * scale.view(shape)
