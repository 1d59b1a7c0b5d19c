"""Exact KL importance (paper Eq. 1), fast.

For every channel c: `score(c) = Σ_x KL(q(x) ‖ p_c(x))`, q the original output distribution, p_c the
output with c removed (summed over token positions for language models). Two things make it fast while
staying exact: many removals ("variants") are stacked along the batch dimension and evaluated in one
pass through masks, and for channels inside layer l the input of that residual branch is computed once
per batch, so each variant runs only the suffix of the network. In a hierarchical model the residual
channels of stage s run from the cached input of that stage's transition (its patch embedding) on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..adapters import AnyWidths, ModelAdapter, layer_widths
from ..scores import ImportanceScores, pack_residual
from .masks import attention_masked, broadcast, ffn_masked, residual_masked
from .proxy_pass import ProxyPass

LOGITS_BUDGET = 2**20
"""Logit elements read out and compared at once (float64): bounds memory for large vocabularies, and at
8 MB of float64 keeps the KL arithmetic near the cache (twice as fast as 256 MB for GPT-2 readouts)."""

COMPONENTS = ("residual", "attention", "ffn")

Masking = Callable[[torch.Tensor], AbstractContextManager]


@dataclass
class ChannelSubset:
    """Which channels of each component to score (boolean masks shaped like `ImportanceScores`' tensors)."""

    residual: torch.Tensor
    attention: list[torch.Tensor]
    ffn: list[torch.Tensor]

    @classmethod
    def full(cls, widths: AnyWidths, components: Iterable[str] = COMPONENTS) -> ChannelSubset:
        """Every channel of the named components (of "residual", "attention", "ffn"), none of the others."""
        components = set(components)
        unknown = components - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
        fill = lambda name, width: torch.full((width,), name in components)  # noqa: E731
        layers = [layer_widths(widths, layer) for layer in range(widths.num_hidden_layers)]
        return cls(pack_residual([fill("residual", w.hidden_size) for w in widths.stages]),
                   [fill("attention", w.attention_width) for w in layers],
                   [fill("ffn", w.intermediate_size) for w in layers])

    @property
    def residual_stages(self) -> list[torch.Tensor]:
        """The residual masks of every stage (`residual` has the `ImportanceScores.residual` shape)."""
        return list(self.residual) if isinstance(self.residual, (list, tuple)) else [self.residual]

    def count(self) -> int:
        return sum(int(m.sum()) for m in (*self.residual_stages, *self.attention, *self.ffn))

    def cost(self) -> int:
        """Work of exact-scoring these channels, in branch applications + readouts to one copy of a batch:
        a channel of branch j runs the suffix from branch j (residual channels: from the embedding; in a
        hierarchical model from their stage's start, counted here as from the embedding)."""
        branches = 2 * len(self.ffn)
        total = sum(int(m.sum()) for m in self.residual_stages) * (branches + 1)
        for layer, (attention, ffn) in enumerate(zip(self.attention, self.ffn)):
            total += int(attention.sum()) * (branches - 2 * layer + 1) + int(ffn.sum()) * (branches - 2 * layer)
        return total

    def as_dict(self) -> dict[str, Any]:
        """Channel indices per component (JSON-ready, for a scores file's meta)."""
        indices = lambda mask: mask.nonzero().flatten().tolist()  # noqa: E731
        residual = [indices(m) for m in self.residual_stages]
        return {"residual": residual[0] if len(residual) == 1 else residual, "attention": [indices(m) for m in self.attention],
                "ffn": [indices(m) for m in self.ffn]}

    def digest(self) -> str:
        """A short identity of the subset (names it in a checkpoint's key)."""
        return hashlib.blake2b(json.dumps(self.as_dict()).encode(), digest_size=8).hexdigest()


class ExactKLScorer:
    """Scores all channels of all components in one pass over the proxy set.

    `variants_per_pass` channel removals (or "auto": from free device memory) are evaluated per forward
    pass; memory grows linearly with it. `scale` options (dtype, checkpoint, checkpoint_every, allow_tf32)
    go to the `ProxyPass`.
    """

    def __init__(self, adapter: ModelAdapter, variants_per_pass: int | str = 16, show_progress: bool = True,
                 **scale: Any):
        self.proxy_pass = ProxyPass(adapter, variants_per_pass, show_progress, **scale)
        self.adapter = adapter

    @property
    def variants_per_pass(self) -> int:
        return self.proxy_pass.variants_per_pass

    def score(self, proxy: Iterable[Mapping[str, Any]], channels: ChannelSubset | None = None) -> ImportanceScores:
        """Scores of every channel, or only of `channels` (only their removals are run; the others are NaN)."""
        widths = self.adapter.widths
        layers = [layer_widths(widths, layer) for layer in range(widths.num_hidden_layers)]
        subset = channels if channels is not None else ChannelSubset.full(widths)
        chosen = ImportanceScores(subset.residual, subset.attention, subset.ffn)
        chosen.check_matches(widths)
        zeros = lambda width: torch.zeros(width, dtype=torch.float64, device=self.proxy_pass.device)  # noqa: E731
        residual = [zeros(stage.hidden_size) for stage in widths.stages]
        attention = [zeros(w.attention_width) for w in layers]
        ffn = [zeros(w.intermediate_size) for w in layers]
        sums = {**{f"residual.{s}": r for s, r in enumerate(residual)},
                **{f"attention.{l}": a for l, a in enumerate(attention)}, **{f"ffn.{l}": f for l, f in enumerate(ffn)}}
        samples = self.proxy_pass.run(proxy, subset.count(), "channel", "UP-ViTs KL scores",
                                      lambda inputs, bar: self._score_batch(inputs, residual, attention, ffn, bar,
                                                                            subset),
                                      sums=sums, method="kl" if channels is None else f"kl subset {subset.digest()}")
        residual, attention, ffn = [r.cpu() for r in residual], [a.cpu() for a in attention], [f.cpu() for f in ffn]
        scores = ImportanceScores(pack_residual(residual), attention, ffn, meta={"method": "kl"})
        if channels is not None:
            for values, mask in zip((*residual, *attention, *ffn),
                                    (*subset.residual_stages, *subset.attention, *subset.ffn)):
                values[~mask] = float("nan")
            scores.meta["exact_channels"] = subset.count()
        scores.meta["proxy_size"] = samples
        return scores

    # ------------------------------------------------------------------ one proxy batch
    def _score_batch(self, inputs, residual, attention, ffn, bar, subset: ChannelSubset) -> int:
        adapter = self.adapter
        widths = adapter.widths
        embedded, context = adapter.embed(inputs)
        weights = adapter.token_weights(inputs)
        pieces = adapter.pieces()
        steps = pieces.steps
        cache = [embedded]  # cache[i] is the input of step i
        for step in steps:
            cache.append(step(cache[-1], context))
        rows = embedded.shape[0]
        reference = log_probs(adapter.readout(cache[-1], context))

        def run(hidden: torch.Tensor, start: int, stacked, masks: torch.Tensor, zero_at: int | None) -> torch.Tensor:
            """Steps `start`… on `hidden`; the stream is multiplied by `masks` before step `zero_at`."""
            for index in range(start, len(steps)):
                if index == zero_at:  # a stage's residual stream starts here: its first writer's output
                    hidden = hidden * broadcast(masks, hidden)
                hidden = steps[index](hidden, stacked)
            return hidden

        def sweep(scores: torch.Tensor, chosen: torch.Tensor, start: int, masking: Masking,
                  reference: torch.Tensor, zero_at: int | None = None) -> None:
            """Remove each chosen channel in turn (variants stacked along the batch), add its KL to `scores`."""
            width, channels = scores.numel(), chosen.nonzero().flatten()
            for chunk in channels.split(self.variants_per_pass) if len(channels) else ():
                variants = len(chunk)
                masks = variant_masks(chunk, width, rows, embedded)
                hidden = cache[start].repeat(variants, *([1] * (cache[start].dim() - 1)))
                stacked = adapter.repeat_context(context, variants)
                with masking(masks):
                    hidden = run(hidden, start, stacked, masks, zero_at)
                # the readout (masked final norm for residual variants) re-enters the masks of its rows
                kl = self._kl(hidden, context, reference, weights, variants, lambda r: masking(masks[r]))
                scores[chunk] += kl
                bar.update(variants)

        for stage, stage_scores in enumerate(residual):
            def residual_masking(masks: torch.Tensor, stage=stage) -> AbstractContextManager:
                return residual_masked(adapter, masks, stage)

            if not subset.residual_stages[stage].any():
                continue
            entry, zero_at = pieces.stage_entries[stage], pieces.first_branch_step(widths, stage)
            # Masked LayerNorms round differently from stock ones: compare residual variants with the
            # unpruned model evaluated through the same masked path.
            keep_all = embedded.new_ones(rows, stage_scores.numel())
            with residual_masking(keep_all):
                hidden = run(cache[entry], entry, context, keep_all, zero_at)
                residual_reference = log_probs(adapter.readout(hidden, context))
            sweep(stage_scores, subset.residual_stages[stage], entry, residual_masking, residual_reference, zero_at)
        for layer in range(len(attention)):
            attention_step, ffn_step = pieces.branch_steps[2 * layer], pieces.branch_steps[2 * layer + 1]
            sweep(attention[layer], subset.attention[layer], attention_step,
                  lambda m: attention_masked(adapter, layer, m), reference)
            sweep(ffn[layer], subset.ffn[layer], ffn_step, lambda m: ffn_masked(adapter, layer, m), reference)
        return rows

    def _kl(self, hidden, context, reference, weights, variants,
            masking: Callable[[slice], AbstractContextManager] | None = None) -> torch.Tensor:
        return stacked_kl(self.adapter, hidden, context, reference, weights, variants, masking)


def stacked_kl(adapter: ModelAdapter, hidden: torch.Tensor, context, reference: torch.Tensor,
               weights: torch.Tensor | None, variants: int,
               masking: Callable[[slice], AbstractContextManager] | None = None) -> torch.Tensor:
    """KL of each of `variants` stacked copies of the batch (final hidden states `hidden`) to `reference`.

    Read out in memory-bounded groups: several whole variants or, when one variant's logits exceed
    `LOGITS_BUDGET` (a language model's tokens × vocabulary), a slice of one variant's samples (contexts are
    batch-first, so their rows are sliced along with the hidden states). `masking(rows)`, if given, is
    entered around the readout of the stacked rows `rows` (the variants' masks of the modules it runs).
    """
    samples = hidden.shape[0] // variants
    per_sample = max(1, reference.numel() // samples)
    group = max(1, LOGITS_BUDGET // per_sample)  # samples read out at once
    if group >= samples:
        step = group // samples
        pieces = [(v, min(v + step, variants), None) for v in range(0, variants, step)]
    else:
        pieces = [(v, v + 1, (s, min(s + group, samples))) for v in range(variants) for s in range(0, samples, group)]
    totals = torch.zeros(variants, dtype=torch.float64, device=hidden.device)
    for first, last, part in pieces:
        if part is None:
            rows = slice(first * samples, last * samples)
            piece_context = adapter.repeat_context(context, last - first)
            piece_reference, piece_weights = reference, weights
        else:
            rows = slice(first * samples + part[0], first * samples + part[1])
            piece_context = _sample_rows(context, samples, *part)
            piece_reference = reference[part[0] : part[1]]
            piece_weights = None if weights is None else weights[part[0] : part[1]]
        with masking(rows) if masking is not None else nullcontext():
            logits = adapter.readout(hidden[rows], piece_context)
        totals[first:last] += kl_per_variant(piece_reference, log_probs(logits), piece_weights)
    return totals


def _sample_rows(context, samples: int, start: int, stop: int):
    """The context of samples start … stop−1 (batch-first tensors sliced; anything else kept)."""
    return {
        k: v[start:stop] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == samples else v
        for k, v in context.items()
    }


def variant_masks(channels: torch.Tensor, width: int, rows: int, like: torch.Tensor) -> torch.Tensor:
    """[variants·rows, width] masks: variant v (rows v·rows … v·rows+rows−1) removes `channels[v]`."""
    masks = like.new_ones(len(channels), width)
    masks[torch.arange(len(channels)), channels.to(like.device)] = 0
    return masks.repeat_interleave(rows, dim=0)


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """float64 log-softmax: the least important channels move the output by amounts float32 cancels away."""
    return torch.log_softmax(logits.double(), dim=-1)


def kl_per_variant(reference: torch.Tensor, variant_log_probs: torch.Tensor, weights: torch.Tensor | None):
    """Σ over samples (and weighted positions) of KL(q ‖ p) for each stacked variant; natural log."""
    stacked = variant_log_probs.view(-1, *reference.shape)
    kl = F.kl_div(stacked, reference.expand_as(stacked), reduction="none", log_target=True).sum(-1)
    if weights is not None:
        kl = kl * weights.to(kl.dtype)
    return kl.flatten(1).sum(1)
