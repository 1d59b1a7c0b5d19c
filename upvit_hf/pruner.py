"""`UPPruner`: the one entry point. Composes adapter → scorer → plan → surgery → a stock model."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from transformers import PreTrainedModel

from .adapters import AnyWidths, adapter_for, layer_widths
from .depth import depth_floors, least_important_unit, remove_unit, source_blocks
from .reconstruct import reconstruct as reconstruct_maps
from .record import RECORD_KEY, updated_record
from .scores import BlockScores, ImportanceScores, model_identity
from .scoring import (
    COMPONENTS,
    DEFAULT_LABELS_PER_INPUT,
    METHODS,
    ChannelSubset,
    ExactKLScorer,
    FisherScorer,
    magnitude_scores,
    random_scores,
    refine_scores,
)
from .scoring.blocks import BlockKLScorer
from .surgery import StateDict, keep_channels, scale_channels
from .targets import PruningPlan, PruningTarget


class UPPruner:
    """UP-ViTs for one model: score every channel of every component, then cut to a thinner stock model.

    >>> pruner = UPPruner(model)                       # ValueError for unsupported models
    >>> scores = pruner.score(proxy_batches)            # Σ KL over the proxy set, per channel
    >>> small = pruner.prune(PruningTarget.from_ratio(model.config, 0.5), scores)
    >>> shallow = pruner.prune_blocks(proxy_batches, num_hidden_layers=9)  # progressive block pruning
    """

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self.adapter = adapter_for(model)

    def score(
        self,
        proxy: Iterable[Mapping[str, Any]] | None = None,
        *,
        method: str = "kl",
        variants_per_pass: int | str = 16,
        seed: int = 0,
        show_progress: bool = True,
        labels_per_input: int = DEFAULT_LABELS_PER_INPUT,
        exact_components: Iterable[str] = ("residual", "attention"),
        **scale: Any,
    ) -> ImportanceScores:
        """Channel importance of all three components.

        `proxy` is any iterable of dict batches of model inputs (a DataLoader, a list; labels are
        ignored). `method="kl"` is the paper's exact criterion; `"fisher"` its second-order estimate from one
        forward and `labels_per_input` backward passes (labels from the model's own output per input, or per
        token for language models; exact once it covers every class; see `scoring.fisher`); `"hybrid"` exact
        KL for `exact_components` and Fisher for the others; `"magnitude"` (L1 norm of the weights a channel
        touches) and `"random"` (seeded) are baselines that need no data.

        Scale options of the exact KL proxy pass (`scoring/proxy_pass.py`, method="kl"): under
        torch.distributed every process scores its shard of the proxy batches and all get the all-reduced
        scores; `checkpoint=PATH`, `checkpoint_every=K` make the run resumable; `dtype=` opts out of running
        the network in float32 (float64 for a float64 model) whatever its dtype; `allow_tf32=True` allows
        TF32 on CUDA; `variants_per_pass="auto"` sizes the stack from free device memory.
        """
        if scale and method in METHODS and method != "kl":
            raise ValueError(f"{', '.join(sorted(scale))} only apply to method='kl' (the exact proxy pass)")
        if method in ("kl", "fisher", "hybrid"):
            if proxy is None:
                raise ValueError(f"method={method!r} needs a proxy set: an iterable of dict batches of model inputs")
            if method == "hybrid" and iter(proxy) is proxy:  # two passes: a one-shot iterator is kept
                proxy = list(proxy)
        if method == "kl":
            scores = ExactKLScorer(self.adapter, variants_per_pass, show_progress, **scale).score(proxy)
        elif method == "fisher":
            scores = FisherScorer(self.adapter, labels_per_input, seed, show_progress).score(proxy)
        elif method == "hybrid":
            scores = self._hybrid(proxy, exact_components, variants_per_pass, seed, show_progress, labels_per_input)
        elif method == "magnitude":
            scores = magnitude_scores(self.adapter)
        elif method == "random":
            scores = random_scores(self.adapter, seed)
        else:
            raise ValueError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
        scores.meta.update(model=model_identity(self.model),
                           widths=self.adapter.widths.as_dict())
        return scores

    def _hybrid(self, proxy, exact_components: Iterable[str], variants_per_pass: int, seed: int,
                show_progress: bool, labels_per_input: int) -> ImportanceScores:
        """Exact KL for `exact_components`, Fisher for the rest (FFN channels are most of the exact cost, and
        there Fisher ranks almost exactly)."""
        exact_components = tuple(exact_components)
        subset = ChannelSubset.full(self.adapter.widths, exact_components)
        fisher = FisherScorer(self.adapter, labels_per_input, seed, show_progress).score(proxy)
        exact = ExactKLScorer(self.adapter, variants_per_pass, show_progress).score(proxy, channels=subset)
        pick = lambda name: exact if name in exact_components else fisher  # noqa: E731
        return ImportanceScores(
            residual=pick("residual").residual, attention=pick("attention").attention, ffn=pick("ffn").ffn,
            meta={"method": "hybrid", "proxy_size": exact.meta["proxy_size"],
                  "components": {name: "kl" if name in exact_components else "fisher" for name in COMPONENTS},
                  "fisher": fisher.meta, "exact_cost_fraction": subset.cost() / ChannelSubset.full(
                      self.adapter.widths).cost()},
        )

    def refine(
        self,
        scores: ImportanceScores,
        target: PruningTarget,
        proxy: Iterable[Mapping[str, Any]],
        *,
        band: float | Mapping[str, float] = 0.1,
        variants_per_pass: int = 16,
        show_progress: bool = True,
    ) -> ImportanceScores:
        """`scores` (e.g. Fisher) with exact KL for the channels whose rank lies within `band` of the cut that
        `target` makes: ±⌈band·width⌉ ranks around each component's keep threshold (per merged head group
        for attention). `band` is one fraction or {"residual": F, "attention": F, "ffn": F}.

        Pruning to `target` with the result keeps every channel ranked above the band, picks the rest of the
        band by exact KL, and none below it. `meta` records the exact channels and the fraction of the full
        exact cost spent; band >= 1 gives the exact scores.
        """
        if proxy is None:
            raise ValueError("refine needs a proxy set: an iterable of dict batches of model inputs")
        refined = refine_scores(self.adapter, scores, self.check_target(target), proxy, band, variants_per_pass,
                                show_progress)
        refined.meta.update(model=model_identity(self.model), widths=self.adapter.widths.as_dict())
        return refined

    def check_target(self, target: PruningTarget) -> AnyWidths:
        """The widths `target` gives this model; ValueError (saying what is allowed) when it cannot."""
        widths = target.resolve(self.adapter.widths)
        self.adapter.check_widths(widths)
        return widths

    def prune(
        self,
        target: PruningTarget,
        scores: ImportanceScores,
        *,
        force: bool = False,
        reconstruct: Iterable[Mapping[str, Any]] | None = None,
        show_progress: bool = True,
    ) -> PreTrainedModel:
        """A new model of the same class with the target widths; the original is untouched.

        Scores recording another model or other widths than this one are refused (ValueError) unless `force`.

        Keeps the top-scored residual and FFN channels, merges groups of heads and keeps the top
        `head_dim` dims of each group, folds the changed attention scale into the query rows, and
        rewrites the config (with the pruning record under `config.upvit_pruning`).

        `reconstruct`, a proxy set (iterable of dict batches of model inputs), also refits the output maps of
        every branch that lost channels, then the readout, by ridge least squares so that the pruned model
        reproduces the original's branch outputs and logits on it (`upvit_hf.reconstruct`); the record notes it
        and the proxy size.
        """
        adapter = self.adapter
        original = adapter.widths
        pruned = self.check_target(target)
        if not force:
            scores.check_origin(self.model, original)
        plan = PruningPlan.from_scores(scores, original, pruned)

        state: StateDict = adapter.surgery_state()
        for layer in range(original.num_hidden_layers):
            old, new = layer_widths(original, layer), layer_widths(pruned, layer)
            factor = adapter.query_scale(old.head_dim, new.head_dim)
            if factor != 1.0:
                scale_channels(state, adapter.query_slices(layer), old.attention_width, factor)
            keep_channels(state, adapter.attention_slices(layer), plan.attention[layer])
            keep_channels(state, adapter.ffn_slices(layer), plan.ffn[layer])
        for stage, kept in enumerate(plan.residual_stages):
            keep_channels(state, adapter.residual_slices(stage), kept)

        config = adapter.pruned_config(pruned)
        adapter.finish_surgery(state, config)
        step = {"operation": "width", "method": scores.meta.get("method"), "proxy_size": scores.meta.get("proxy_size")}
        setattr(config, RECORD_KEY, updated_record(self.model, original, pruned, step))
        model = self._build(config, state)
        if reconstruct is not None:
            refit = []
            for layer in range(original.num_hidden_layers):
                old, new = layer_widths(original, layer), layer_widths(pruned, layer)
                residual_cut = new.hidden_size < old.hidden_size
                attention_cut = (new.num_attention_heads, new.head_dim) != (old.num_attention_heads, old.head_dim)
                refit += [residual_cut or attention_cut, residual_cut or new.intermediate_size < old.intermediate_size]
            report = reconstruct_maps(adapter, adapter_for(model), reconstruct, plan.residual, refit,
                                      show_progress=show_progress)
            getattr(model.config, RECORD_KEY)["steps"][-1]["reconstruction"] = report.record()
        return model

    # ------------------------------------------------------------------ depth
    def score_blocks(
        self,
        proxy: Iterable[Mapping[str, Any]],
        *,
        variants_per_pass: int | str = 8,
        show_progress: bool = True,
        **scale: Any,
    ) -> BlockScores:
        """Importance of every whole block and every hybrid unit (FFN of block i + attention of block i+1).

        `block[i]` / `hybrid[i]` = Σ KL(q ‖ p) over the proxy set with that unit's two residual branches
        skipped, exactly what the model computes once `prune_blocks` removes it. `scale` options as in
        `score` (data parallelism, checkpoint, dtype, allow_tf32).
        """
        if proxy is None:
            raise ValueError("block scores need a proxy set: an iterable of dict batches of model inputs")
        scores = BlockKLScorer(self.adapter, variants_per_pass, show_progress, **scale).score(proxy)
        scores.meta.update(model=model_identity(self.model),
                           widths=self.adapter.widths.as_dict())
        return scores

    def prune_blocks(
        self,
        proxy: Iterable[Mapping[str, Any]],
        num_hidden_layers: int | tuple[int, ...],
        between_steps: Callable[[PreTrainedModel, int], Any] | None = None,
        *,
        variants_per_pass: int | str = 8,
        show_progress: bool = True,
        reconstruct: bool = False,
        checkpoint: str | os.PathLike | None = None,
        **scale: Any,
    ) -> PreTrainedModel:
        """Progressive block pruning: remove the least important unit (block or hybrid), re-score the
        reduced model, repeat until `num_hidden_layers` blocks remain. A new stock model; the original is
        untouched. For a hierarchical model units are removed within a stage, every stage keeps at least one
        block, and `num_hidden_layers` may be a tuple with the depth of every stage (PVTv2's `depths`).

        `between_steps(model, step)`, if given, runs after removal number `step` (0-based) on the current
        model, e.g. a short distillation that trains it in place; the next step scores the model it leaves.
        The proxy set is iterated once per step: a one-shot iterator is materialized to a list first.
        The pruning record gets one "depth" step listing the removed units in order, each with the block
        indices it had in the model it was removed from, and its score.
        `scale` options as in `score`; with `checkpoint=PATH` step k keeps its checkpoint at `PATH.stepK`, so
        a rerun recomputes finished steps from their checkpoints and resumes the interrupted one (a
        `between_steps` that changes the model makes the next steps' checkpoints refuse to resume).

        `reconstruct=True` refits, after each removal and on the same proxy set, the output maps of every
        branch after the removed unit and the readout so that, fed the reduced model's own residual stream, each
        reproduces what it wrote in the model before the removal (`upvit_hf.reconstruct`).
        """
        self.adapter.check_scorable()
        original = self.adapter.widths
        floors = depth_floors(original, num_hidden_layers)
        if between_steps is not None and not callable(between_steps):
            raise ValueError(f"between_steps must be a callable (model, step), got {type(between_steps).__name__}")
        if proxy is None:
            raise ValueError("prune_blocks needs a proxy set: an iterable of dict batches of model inputs")
        if iter(proxy) is proxy:  # a generator or other one-shot iterator: every step needs the whole set
            proxy = list(proxy)
        total = sum(floors) if isinstance(num_hidden_layers, tuple) else num_hidden_layers
        if total == original.num_hidden_layers:
            return copy.deepcopy(self.model)

        removed: list[dict[str, Any]] = []
        refit_maps = 0
        current = self
        for step in range(original.num_hidden_layers - total):
            if checkpoint is not None:
                scale["checkpoint"] = f"{os.fspath(checkpoint)}.step{step}"
            scores = current.score_blocks(proxy, variants_per_pass=variants_per_pass, show_progress=show_progress,
                                          **scale)
            unit = least_important_unit(scores, current.adapter.widths, floors)
            removed.append({**unit.as_dict(), "score": float(scores.by_branch()[unit.first_branch])})
            config, state = remove_unit(current.adapter, unit)
            widths = current.adapter.read_widths(config)
            record_step = {"operation": "depth", "removed": copy.deepcopy(removed), "method": "kl",
                           "proxy_size": scores.meta.get("proxy_size")}
            setattr(config, RECORD_KEY, updated_record(self.model, original, widths, record_step))
            model = current._build(config, state)
            if reconstruct:
                sources = [b for old_blocks in source_blocks(unit, current.adapter.widths.num_hidden_layers)
                           for b in (2 * old_blocks[0], 2 * old_blocks[1] + 1)]
                report = reconstruct_maps(current.adapter, adapter_for(model), proxy,
                                          torch.arange(layer_widths(widths, 0).hidden_size),
                                          [s != k for k, s in enumerate(sources)],
                                          sources=sources, show_progress=show_progress)
                refit_maps += len(report.fits)
                getattr(model.config, RECORD_KEY)["steps"][-1]["reconstruction"] = {**report.record(),
                                                                                     "refit_maps": refit_maps}
            if between_steps is not None:
                between_steps(model, step)
            current = UPPruner(model)
        return current.model.train(self.model.training)

    def _build(self, config, state: StateDict) -> PreTrainedModel:
        """A stock model of the original's class, dtype, device and mode, holding `state`."""
        model = self.adapter.build(config).to(device=self.model.device, dtype=self.model.dtype)
        model.load_state_dict(state, strict=True)
        if getattr(self.model, "generation_config", None) is not None:
            model.generation_config = copy.deepcopy(self.model.generation_config)
        return model.train(self.model.training)
