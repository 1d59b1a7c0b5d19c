"""Naive criteria with the same `ImportanceScores` shape, to compare KL importance against."""

from __future__ import annotations

import torch

from ..adapters import ModelAdapter, ParamSlice, layer_widths
from ..scores import ImportanceScores, pack_residual


def _l1(adapter: ModelAdapter, slices: list[ParamSlice], width: int) -> torch.Tensor:
    """Σ |w| over every weight a channel touches (each tied tensor counted once)."""
    state = adapter.surgery_state()  # the layout the slices name
    scores = torch.zeros(width, dtype=torch.float64)
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    channels = torch.arange(width)
    for s in slices:
        tensor = state[s.name]
        key = (tensor.data_ptr(), s.axis, s.offsets)
        if key in seen:
            continue
        seen.add(key)
        dims = [d for d in range(tensor.dim()) if d != s.axis]
        per_index = tensor.detach().double().abs().sum(dim=dims).cpu() if dims else tensor.detach().double().abs().cpu()
        for offset in s.offsets:
            scores += per_index[channels + offset]
    return scores


def magnitude_scores(adapter: ModelAdapter) -> ImportanceScores:
    """L1 norm of the weights each channel touches; needs no data."""
    widths = adapter.widths
    layers = range(widths.num_hidden_layers)
    return ImportanceScores(
        residual=pack_residual([_l1(adapter, adapter.residual_slices(s), w.hidden_size) for s, w in enumerate(widths.stages)]),
        attention=[_l1(adapter, adapter.attention_slices(l), layer_widths(widths, l).attention_width) for l in layers],
        ffn=[_l1(adapter, adapter.ffn_slices(l), layer_widths(widths, l).intermediate_size) for l in layers],
        meta={"method": "magnitude"},
    )


def random_scores(adapter: ModelAdapter, seed: int = 0) -> ImportanceScores:
    """Uniform random scores from a seeded generator: the floor any criterion should beat."""
    widths = adapter.widths
    generator = torch.Generator().manual_seed(seed)
    draw = lambda n: torch.rand(n, generator=generator, dtype=torch.float64)  # noqa: E731
    layers = range(widths.num_hidden_layers)
    return ImportanceScores(
        residual=pack_residual([draw(w.hidden_size) for w in widths.stages]),
        attention=[draw(layer_widths(widths, l).attention_width) for l in layers],
        ffn=[draw(layer_widths(widths, l).intermediate_size) for l in layers],
        meta={"method": "random", "seed": seed},
    )
