"""What the user asks for (`PruningTarget`) and what it means channel by channel (`PruningPlan`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from .adapters import AnyWidths, Widths, adapter_class_for_config, from_stages, layer_widths
from .scores import ImportanceScores


Width = int | tuple[int, ...]
"""One width per stage; an int is the same width in every stage (and the only one of a plain model)."""

_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "head_dim")


@dataclass(frozen=True)
class PruningTarget:
    """The widths of the pruned model; the same in every layer (of a stage), as in the paper.

    For a hierarchical model (PVTv2) every field may be a tuple with one entry per stage; an int means the
    same value in every stage. `head_dim` defaults to `hidden_size // num_attention_heads`. The new head
    count must divide the old one: groups of `old_heads // num_attention_heads` consecutive heads merge into
    one head, which keeps the `head_dim` most important dims of its group.
    """

    hidden_size: Width
    num_attention_heads: Width
    intermediate_size: Width
    head_dim: Width | None = None

    def __post_init__(self) -> None:
        for name in _FIELDS:  # lists become tuples so targets stay hashable and printable
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @classmethod
    def from_ratio(cls, config: PretrainedConfig, ratio: float) -> PruningTarget:
        """Keep `ratio` of every component: hidden, FFN and attention widths scale by `ratio`.

        The head count scales too (to the divisor of the original count closest to `ratio·heads`), so
        ratio 0.5 turns DeiT-B (768 wide, 12 heads of 64) into the DeiT-S shape (384, 6 heads of 64).
        Where the family derives head_dim from the hidden size (GPT-2, PVTv2), the hidden size is rounded
        to a multiple of the head count; where it builds the FFN as an integer multiple of the hidden size
        (PVTv2), that multiple is kept. Hierarchical models get one width per stage.
        """
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        adapter = adapter_class_for_config(config)
        per_stage = []
        for widths in adapter.read_widths(config).stages:
            old_heads = widths.num_attention_heads
            divisors = [h for h in range(1, old_heads + 1) if old_heads % h == 0]
            heads = min(divisors, key=lambda h: (abs(h - ratio * old_heads), -h))
            hidden = max(1, round(ratio * widths.hidden_size))
            if adapter.head_dim_follows_hidden:  # e.g. GPT-2: the hidden size must be a multiple of the heads
                hidden = min(max(heads, round(hidden / heads) * heads), widths.hidden_size // heads * heads)
            intermediate = max(1, round(ratio * widths.intermediate_size))
            if adapter.intermediate_follows_hidden:  # e.g. PVTv2: keep the stage's integer mlp ratio
                intermediate = hidden * (widths.intermediate_size // widths.hidden_size)
            per_stage.append((hidden, heads, intermediate))
        if len(per_stage) == 1:
            return cls(*per_stage[0])
        return cls(*(tuple(column) for column in zip(*per_stage)))

    def _stage_values(self, num_stages: int) -> list[dict[str, int | None]]:
        """The target of each stage; ValueError when a per-stage tuple has the wrong length."""
        columns = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                if len(value) != num_stages:
                    raise ValueError(
                        f"{name} has {len(value)} entries but the model has {num_stages} stage(s): "
                        f"give one per stage, or one int for all"
                    )
                columns[name] = list(value)
            else:
                columns[name] = [value] * num_stages
        return [{name: columns[name][s] for name in _FIELDS} for s in range(num_stages)]

    def resolve(self, original: AnyWidths) -> AnyWidths:
        """The new widths, validated against the original model's; ValueError says what is allowed."""
        stages = original.stages
        resolved = []
        for stage, (values, widths) in enumerate(zip(self._stage_values(len(stages)), stages)):
            try:
                resolved.append(_resolve_stage(values, widths))
            except ValueError as error:
                raise ValueError(f"stage {stage}: {error}" if len(stages) > 1 else str(error)) from None
        return from_stages(resolved)


def _resolve_stage(target: dict[str, int | None], original: Widths) -> Widths:
    for name, value in target.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    hidden, heads, intermediate = target["hidden_size"], target["num_attention_heads"], target["intermediate_size"]
    if hidden > original.hidden_size:
        raise ValueError(f"hidden_size={hidden} exceeds the model's {original.hidden_size}")
    if intermediate > original.intermediate_size:
        raise ValueError(f"intermediate_size={intermediate} exceeds the model's {original.intermediate_size}")
    old_heads = original.num_attention_heads
    if heads > old_heads or old_heads % heads:
        divisors = [h for h in range(1, old_heads + 1) if old_heads % h == 0]
        raise ValueError(
            f"num_attention_heads={heads} must divide the model's {old_heads} heads "
            f"(heads are merged in equal groups); allowed: {divisors}"
        )
    head_dim = target["head_dim"] if target["head_dim"] is not None else hidden // heads
    group_width = original.attention_width // heads
    if not 0 < head_dim <= group_width:
        raise ValueError(
            f"head_dim={head_dim} must be between 1 and {group_width}, the width of a group of "
            f"{old_heads // heads} merged heads of {original.head_dim} dims"
        )
    return Widths(hidden, heads, head_dim, intermediate, original.num_hidden_layers)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order."""
    return torch.topk(scores, k).indices.sort().values


@dataclass
class PruningPlan:
    """Kept channel indices per component, in original order; what surgery applies. `residual` has the
    shape of the scores' (one tensor, or one per stage)."""

    original: AnyWidths
    pruned: AnyWidths
    residual: torch.Tensor | list[torch.Tensor]
    attention: list[torch.Tensor]
    ffn: list[torch.Tensor]

    @property
    def residual_stages(self) -> list[torch.Tensor]:
        return list(self.residual) if isinstance(self.residual, (list, tuple)) else [self.residual]

    @classmethod
    def from_scores(cls, scores: ImportanceScores, original: AnyWidths, pruned: AnyWidths) -> PruningPlan:
        scores.check_matches(original)

        def attention(layer: int, layer_scores: torch.Tensor) -> torch.Tensor:
            old, new = layer_widths(original, layer), layer_widths(pruned, layer)
            groups = new.num_attention_heads
            group_width = old.attention_width // groups
            per_group = layer_scores.view(groups, group_width)
            kept = torch.topk(per_group, new.head_dim, dim=1).indices.sort(dim=1).values
            return (kept + torch.arange(groups).unsqueeze(1) * group_width).flatten()

        residual = [_top(s, w.hidden_size) for s, w in zip(scores.residual_stages, pruned.stages)]
        return cls(
            original=original,
            pruned=pruned,
            residual=residual if isinstance(scores.residual, (list, tuple)) else residual[0],
            attention=[attention(layer, s) for layer, s in enumerate(scores.attention)],
            ffn=[_top(s, layer_widths(pruned, layer).intermediate_size) for layer, s in enumerate(scores.ffn)],
        )
