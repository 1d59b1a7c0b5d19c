"""`UPPruner`: the one entry point. Composes adapter → scorer → plan → surgery → a stock model."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from transformers import PreTrainedModel

from .adapters import adapter_for
from .record import RECORD_KEY, updated_record
from .scores import ImportanceScores
from .scoring import METHODS, ExactKLScorer, magnitude_scores, random_scores
from .surgery import StateDict, keep_channels, scale_channels
from .targets import PruningPlan, PruningTarget


class UPPruner:
    """UP-ViTs for one model: score every channel of every component, then cut to a thinner stock model.

    >>> pruner = UPPruner(model)                       # ValueError for unsupported models
    >>> scores = pruner.score(proxy_batches)            # Σ KL over the proxy set, per channel
    >>> small = pruner.prune(PruningTarget.from_ratio(model.config, 0.5), scores)
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.adapter = adapter_for(model)

    def score(
        self,
        proxy: Iterable[Mapping[str, Any]] | None = None,
        *,
        method: str = "kl",
        variants_per_pass: int = 16,
        seed: int = 0,
        show_progress: bool = True,
    ) -> ImportanceScores:
        """Channel importance of all three components.

        `proxy` is any iterable of dict batches of model inputs (a DataLoader, a list; labels are
        ignored). `method="kl"` is the paper's exact criterion; `"magnitude"` (L1 norm of the weights a
        channel touches) and `"random"` (seeded) are baselines that need no data.
        """
        if method == "kl":
            if proxy is None:
                raise ValueError("method='kl' needs a proxy set: an iterable of dict batches of model inputs")
            scores = ExactKLScorer(self.adapter, variants_per_pass, show_progress).score(proxy)
        elif method == "magnitude":
            scores = magnitude_scores(self.adapter)
        elif method == "random":
            scores = random_scores(self.adapter, seed)
        else:
            raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
        scores.meta.update(model=self.model.name_or_path or type(self.model).__name__,
                           widths=self.adapter.widths.as_dict())
        return scores

    def prune(self, target: PruningTarget, scores: ImportanceScores) -> PreTrainedModel:
        """A new model of the same class with the target widths; the original is untouched.

        Keeps the top-scored residual and FFN channels, merges groups of heads and keeps the top
        `head_dim` dims of each group, folds the changed attention scale into the query rows, and
        rewrites the config (with the pruning record under `config.upvit_pruning`).
        """
        adapter = self.adapter
        original = adapter.widths
        pruned = target.resolve(original)
        adapter.check_widths(pruned)
        plan = PruningPlan.from_scores(scores, original, pruned)

        state: StateDict = dict(self.model.state_dict())
        factor = adapter.query_scale(original.head_dim, pruned.head_dim)
        for layer in range(original.num_hidden_layers):
            if factor != 1.0:
                scale_channels(state, adapter.query_slices(layer), original.attention_width, factor)
            keep_channels(state, adapter.attention_slices(layer), plan.attention[layer])
            keep_channels(state, adapter.ffn_slices(layer), plan.ffn[layer])
        keep_channels(state, adapter.residual_slices(), plan.residual)

        config = adapter.pruned_config(pruned)
        step = {"operation": "width", "method": scores.meta.get("method"), "proxy_size": scores.meta.get("proxy_size")}
        setattr(config, RECORD_KEY, updated_record(self.model, original, pruned, step))
        return self._build(config, state)

    def _build(self, config, state: StateDict) -> PreTrainedModel:
        """A stock model of the original's class, dtype, device and mode, holding `state`."""
        model = self.adapter.build(config).to(device=self.model.device, dtype=self.model.dtype)
        model.load_state_dict(state, strict=True)
        if getattr(self.model, "generation_config", None) is not None:
            model.generation_config = copy.deepcopy(self.model.generation_config)
        return model.train(self.model.training)
