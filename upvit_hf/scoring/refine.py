"""Exact KL only where the cut is decided.

A pruning plan keeps the top k channels of a component (of each merged head group, for attention). Only the
order of channels near rank k matters, so given approximate scores (Fisher, magnitude, ...) and a target,
re-score with exact KL the channels whose approximate rank lies in a band of ±⌈F·n⌉ ranks around k (n the
component's width, or the group's width for attention), and keep the approximate ranking elsewhere.

The refined scores stay a valid ranking for the plan: within each component (group), channels ranked above
the band are shifted above every exact band score and those below it under every band score, each keeping its
approximate order. So the plan keeps every above-band channel, picks the rest by exact KL among the band, and
never keeps a below-band one. With F ≥ 1 every channel is in the band and the result is the exact scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..adapters import ModelAdapter, Widths
from ..scores import ImportanceScores
from .exact import COMPONENTS, ChannelSubset, ExactKLScorer

Band = float | Mapping[str, float]


def resolve_band(band: Band) -> dict[str, float]:
    """Per-component band fractions from one number or a {component: fraction} mapping (missing ones: 0)."""
    if isinstance(band, Mapping):
        unknown = set(band) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown band components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
        bands = {name: band.get(name, 0.0) for name in COMPONENTS}
    else:
        bands = dict.fromkeys(COMPONENTS, band)
    for name, value in bands.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"the {name} band must be a fraction >= 0 of the component's width, got {value!r}")
    return {name: float(value) for name, value in bands.items()}


def tiers(scores: torch.Tensor, keep: int, band: float, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(above, inside): boolean masks of channels ranked above the band and inside it, per group of
    `scores.numel() // groups` consecutive channels each keeping its top `keep`."""
    per_group = scores.view(groups, -1)
    width = per_group.shape[1]
    half = math.ceil(band * width)
    order = torch.argsort(per_group, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(width).expand_as(order).contiguous())
    inside = (rank >= keep - half) & (rank < keep + half)
    return (rank < keep - half).flatten(), inside.flatten()


def merge(approximate: torch.Tensor, exact: torch.Tensor, above: torch.Tensor, inside: torch.Tensor,
          groups: int = 1) -> torch.Tensor:
    """Exact scores inside the band; approximate ones outside, shifted past the band's (per group)."""
    merged = approximate.double().clone().view(groups, -1)
    exact, above, inside = exact.double().view(groups, -1), above.view(groups, -1), inside.view(groups, -1)
    for group in range(groups):
        band = inside[group]
        if not band.any():
            continue
        values = merged[group]
        top, bottom = exact[group][band].max(), exact[group][band].min()
        gap = max(1.0, float(top.abs()), float(bottom.abs()))  # large enough to survive rounding
        up, down = above[group], ~above[group] & ~band
        if up.any():
            values[up] += top + gap - values[up].min()
        if down.any():
            values[down] += bottom - gap - values[down].max()
        values[band] = exact[group][band]
    return merged.flatten()


def refine_scores(adapter: ModelAdapter, scores: ImportanceScores, pruned: Widths,
                  proxy: Iterable[Mapping[str, Any]], band: Band, variants_per_pass: int = 16,
                  show_progress: bool = True) -> ImportanceScores:
    """`scores` with the channels near each component's cut to `pruned` widths re-scored by exact KL."""
    adapter.require_one_stage("refinement")
    original = adapter.widths
    scores.check_matches(original)
    bands = resolve_band(band)
    groups = pruned.num_attention_heads
    residual = tiers(scores.residual, pruned.hidden_size, bands["residual"])
    attention = [tiers(s, pruned.head_dim, bands["attention"], groups) for s in scores.attention]
    ffn = [tiers(s, pruned.intermediate_size, bands["ffn"]) for s in scores.ffn]
    subset = ChannelSubset(residual[1], [inside for _, inside in attention], [inside for _, inside in ffn])
    exact = ExactKLScorer(adapter, variants_per_pass, show_progress).score(proxy, channels=subset)
    everything = ChannelSubset.full(original)
    meta = {
        "method": "refined",
        "base": scores.meta,
        "band": bands,
        "target": pruned.as_dict(),
        "proxy_size": exact.meta["proxy_size"],
        "exact_channels": subset.as_dict(),
        "exact_channel_fraction": subset.count() / everything.count(),
        "exact_cost_fraction": subset.cost() / everything.cost(),
    }
    return ImportanceScores(
        residual=merge(scores.residual, exact.residual, *residual),
        attention=[merge(s, e, *t, groups) for s, e, t in zip(scores.attention, exact.attention, attention)],
        ffn=[merge(s, e, *t) for s, e, t in zip(scores.ffn, exact.ffn, ffn)],
        meta=meta,
    )
