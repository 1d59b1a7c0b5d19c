"""Exact KL importance (paper Eq. 1), fast.

For every channel c: `score(c) = Σ_x KL(q(x) ‖ p_c(x))`, q the original output distribution, p_c the
output with c removed (summed over token positions for language models). Two things make it fast while
staying exact: many removals ("variants") are stacked along the batch dimension and evaluated in one
pass through masks, and for channels inside layer l the input of that residual branch is computed once
per batch, so each variant runs only the suffix of the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from ..adapters import ModelAdapter
from ..scores import ImportanceScores
from .masks import attention_masked, broadcast, ffn_masked, residual_masked
from .proxy_pass import ProxyPass

LOGITS_BUDGET = 2**20
"""Logit elements read out and compared at once (float64): bounds memory for large vocabularies, and at
8 MB of float64 keeps the KL arithmetic near the cache (twice as fast as 256 MB for GPT-2 readouts)."""

Masking = Callable[[torch.Tensor], AbstractContextManager]


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

    def score(self, proxy: Iterable[Mapping[str, Any]]) -> ImportanceScores:
        widths = self.adapter.widths
        layers = range(widths.num_hidden_layers)
        zeros = lambda width: torch.zeros(width, dtype=torch.float64, device=self.proxy_pass.device)  # noqa: E731
        residual = zeros(widths.hidden_size)
        attention = [zeros(widths.attention_width) for _ in layers]
        ffn = [zeros(widths.intermediate_size) for _ in layers]
        sums = {"residual": residual, **{f"attention.{l}": a for l, a in enumerate(attention)},
                **{f"ffn.{l}": f for l, f in enumerate(ffn)}}
        per_batch = widths.hidden_size + widths.num_hidden_layers * (widths.attention_width + widths.intermediate_size)
        samples = self.proxy_pass.run(proxy, per_batch, "channel", "UP-ViTs KL scores",
                                      lambda inputs, bar: self._score_batch(inputs, residual, attention, ffn, bar),
                                      sums=sums, method="kl")
        return ImportanceScores(residual.cpu(), [a.cpu() for a in attention], [f.cpu() for f in ffn],
                                meta={"method": "kl", "proxy_size": samples})

    # ------------------------------------------------------------------ one proxy batch
    def _score_batch(self, inputs, residual, attention, ffn, bar) -> int:
        adapter = self.adapter
        embedded, context = adapter.embed(inputs)
        weights = adapter.token_weights(inputs)
        branches = adapter.branches()
        cache = [embedded]  # cache[i] is the input of branch i
        for branch in branches:
            cache.append(branch(cache[-1], context))
        rows = embedded.shape[0]
        reference = log_probs(adapter.readout(cache[-1], context))

        def sweep(scores: torch.Tensor, start: int, masking: Masking, reference: torch.Tensor,
                  mask_input: bool = False) -> None:
            """Remove each channel in turn (variants stacked along the batch) and add its KL to `scores`."""
            width = scores.numel()
            for chunk in torch.arange(width).split(self.variants_per_pass):
                variants = len(chunk)
                masks = variant_masks(chunk, width, rows, embedded)
                hidden = cache[start].repeat(variants, *([1] * (embedded.dim() - 1)))
                if mask_input:  # the embedding is the residual stream's first writer
                    hidden = hidden * broadcast(masks, hidden)
                stacked = adapter.repeat_context(context, variants)
                with masking(masks):
                    for branch in branches[start:]:
                        hidden = branch(hidden, stacked)
                # the readout (masked final norm for residual variants) re-enters the masks of its rows
                kl = self._kl(hidden, context, reference, weights, variants, lambda r: masking(masks[r]))
                scores[chunk] += kl
                bar.update(variants)

        def residual_masking(masks: torch.Tensor) -> AbstractContextManager:
            return residual_masked(adapter, masks)

        # Masked LayerNorms round differently from stock ones: compare residual variants with the
        # unpruned model evaluated through the same masked path.
        keep_all = embedded.new_ones(rows, residual.numel())
        with residual_masking(keep_all):
            hidden = embedded
            for branch in branches:
                hidden = branch(hidden, context)
            residual_reference = log_probs(adapter.readout(hidden, context))
        sweep(residual, 0, residual_masking, residual_reference, mask_input=True)
        for layer in range(len(attention)):
            sweep(attention[layer], 2 * layer, lambda m: attention_masked(adapter, layer, m), reference)
            sweep(ffn[layer], 2 * layer + 1, lambda m: ffn_masked(adapter, layer, m), reference)
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
