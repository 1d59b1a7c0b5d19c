"""The compared ways to get a student's starting weights; adding a criterion or a recovery is one entry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .. import PruningTarget, UPPruner
from ..scores import ImportanceScores


@dataclass(frozen=True)
class Method:
    """A scoring criterion of `UPPruner.score`, optionally refined near each target's cut."""

    key: str
    label: str
    score: str  # the `UPPruner.score` method
    refine_band: float | None = None  # exact KL for the channels within this band of the cut (`UPPruner.refine`)

    def prune(self, pruner: UPPruner, target: PruningTarget, scores: Mapping[str, ImportanceScores],
              proxy: Iterable[Mapping[str, torch.Tensor]]) -> PreTrainedModel:
        chosen = scores[self.score]
        if self.refine_band is not None:
            chosen = pruner.refine(chosen, target, proxy, band=self.refine_band, show_progress=False)
        return pruner.prune(target, chosen)


METHODS: tuple[Method, ...] = (
    Method("kl", "UP (exact KL)", "kl"),
    Method("fisher", "Fisher (2nd-order KL)", "fisher"),
    Method("refined", "Fisher, exact KL near the cut", "fisher", refine_band=0.1),
    Method("magnitude", "magnitude (L1)", "magnitude"),
    Method("random", "random", "random"),
)
REFERENCE = "kl"  # the method every comparison is against
SCRATCH = "scratch"
SCRATCH_LABEL = "same arch. from scratch"


def methods_for(keys: Sequence[str]) -> tuple[Method, ...]:
    """The named methods in `METHODS` order; ValueError for unknown names or without the reference."""
    known = {m.key for m in METHODS}
    unknown = sorted(set(keys) - known)
    if unknown or REFERENCE not in keys:
        raise ValueError(f"methods must include {REFERENCE!r} and come from {sorted(known)}, got {list(keys)}")
    return tuple(m for m in METHODS if m.key in keys)


def method_labels(keys: Sequence[str] | None = None) -> dict[str, str]:
    """Compared rows in table order: the (named) methods, then the scratch baseline."""
    chosen = METHODS if keys is None else methods_for([k for k in keys if k != SCRATCH])
    return {**{m.key: m.label for m in chosen}, SCRATCH: SCRATCH_LABEL}
