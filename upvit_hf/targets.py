"""What the user asks for (`PruningTarget`) and what it means channel by channel (`PruningPlan`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from .adapters import Widths, adapter_class_for_config
from .scores import ImportanceScores


@dataclass(frozen=True)
class PruningTarget:
    """The widths of the pruned model; the same in every layer, as in the paper.

    `head_dim` defaults to `hidden_size // num_attention_heads`. The new head count must divide the old
    one: groups of `old_heads // num_attention_heads` consecutive heads merge into one head, which keeps
    the `head_dim` most important dims of its group.
    """

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    head_dim: int | None = None

    @classmethod
    def from_ratio(cls, config: PretrainedConfig, ratio: float) -> PruningTarget:
        """Keep `ratio` of every component: hidden, FFN and attention widths scale by `ratio`.

        The head count scales too (to the divisor of the original count closest to `ratio·heads`), so
        ratio 0.5 turns DeiT-B (768 wide, 12 heads of 64) into the DeiT-S shape (384, 6 heads of 64).
        Where the family derives head_dim from the hidden size (GPT-2), the hidden size is rounded to a
        multiple of the head count.
        """
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        adapter = adapter_class_for_config(config)
        widths = adapter.read_widths(config)
        old_heads = widths.num_attention_heads
        divisors = [h for h in range(1, old_heads + 1) if old_heads % h == 0]
        heads = min(divisors, key=lambda h: (abs(h - ratio * old_heads), -h))
        hidden = max(1, round(ratio * widths.hidden_size))
        if adapter.head_dim_follows_hidden:  # e.g. GPT-2: the hidden size must be a multiple of the heads
            hidden = min(max(heads, round(hidden / heads) * heads), widths.hidden_size // heads * heads)
        return cls(
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=max(1, round(ratio * widths.intermediate_size)),
        )

    def resolve(self, original: Widths) -> Widths:
        """The new widths, validated against the original model's; ValueError says what is allowed."""
        for name in ("hidden_size", "num_attention_heads", "intermediate_size", "head_dim"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size > original.hidden_size:
            raise ValueError(f"hidden_size={self.hidden_size} exceeds the model's {original.hidden_size}")
        if self.intermediate_size > original.intermediate_size:
            raise ValueError(
                f"intermediate_size={self.intermediate_size} exceeds the model's {original.intermediate_size}"
            )
        old_heads = original.num_attention_heads
        if self.num_attention_heads > old_heads or old_heads % self.num_attention_heads:
            divisors = [h for h in range(1, old_heads + 1) if old_heads % h == 0]
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide the model's {old_heads} heads "
                f"(heads are merged in equal groups); allowed: {divisors}"
            )
        head_dim = self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads
        group_width = original.attention_width // self.num_attention_heads
        if not 0 < head_dim <= group_width:
            raise ValueError(
                f"head_dim={head_dim} must be between 1 and {group_width}, the width of a group of "
                f"{old_heads // self.num_attention_heads} merged heads of {original.head_dim} dims"
            )
        return Widths(self.hidden_size, self.num_attention_heads, head_dim, self.intermediate_size,
                      original.num_hidden_layers)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order."""
    return torch.topk(scores, k).indices.sort().values


@dataclass
class PruningPlan:
    """Kept channel indices per component, in original order; what surgery applies."""

    original: Widths
    pruned: Widths
    residual: torch.Tensor
    attention: list[torch.Tensor]
    ffn: list[torch.Tensor]

    @classmethod
    def from_scores(cls, scores: ImportanceScores, original: Widths, pruned: Widths) -> PruningPlan:
        scores.check_matches(original)
        groups = pruned.num_attention_heads
        group_width = original.attention_width // groups
        offsets = torch.arange(groups).unsqueeze(1) * group_width

        def attention(layer_scores: torch.Tensor) -> torch.Tensor:
            per_group = layer_scores.view(groups, group_width)
            kept = torch.topk(per_group, pruned.head_dim, dim=1).indices.sort(dim=1).values
            return (kept + offsets).flatten()

        return cls(
            original=original,
            pruned=pruned,
            residual=_top(scores.residual, pruned.hidden_size),
            attention=[attention(s) for s in scores.attention],
            ffn=[_top(s, pruned.intermediate_size) for s in scores.ffn],
        )
