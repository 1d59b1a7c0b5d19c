"""Exact KL importance (paper Eq. 1), fast.

For every channel c: `score(c) = Σ_x KL(q(x) ‖ p_c(x))`, q the original output distribution, p_c the
output with c removed (summed over token positions for language models). Two things make it fast while
staying exact: many removals ("variants") are stacked along the batch dimension and evaluated in one
pass through masks, and for channels inside layer l the input of that residual branch is computed once
per batch, so each variant runs only the suffix of the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..adapters import ModelAdapter, Widths
from ..scores import ImportanceScores
from .masks import attention_masked, broadcast, ffn_masked, residual_masked

LOGITS_BUDGET = 2**20
"""Logit elements read out and compared at once (float64): bounds memory for large vocabularies, and at
8 MB of float64 keeps the KL arithmetic near the cache (twice as fast as 256 MB for GPT-2 readouts)."""

COMPONENTS = ("residual", "attention", "ffn")

Masking = Callable[[torch.Tensor], AbstractContextManager]


def prepare_inputs(batch: Any, adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    """The model inputs of a proxy batch (labels and other keys ignored), on the model's device."""
    if not isinstance(batch, Mapping):
        raise ValueError(f"proxy batches must be dicts of model inputs, got {type(batch).__name__}")
    missing = [name for name in adapter.required_inputs if name not in batch]
    if missing:
        raise ValueError(
            f"a proxy batch is missing {', '.join(missing)}; {type(adapter.model).__name__} needs "
            f"{', '.join(adapter.required_inputs)}, the batch has {', '.join(map(str, batch)) or 'no keys'}"
        )
    names = (*adapter.required_inputs, *adapter.optional_inputs)
    device = adapter.model.device
    return {name: torch.as_tensor(batch[name]).to(device) for name in names if batch.get(name) is not None}


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Score in eval mode (no dropout) whatever mode the model came in, and give it back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class ProxyPass:
    """One pass over a proxy set as every scorer makes it: inference mode (autograd on for scorers that
    differentiate), the model in eval mode (and given back as it came), inputs checked, a progress bar
    counting scored units, the samples counted."""

    def __init__(self, adapter: ModelAdapter, variants_per_pass: int, show_progress: bool):
        if variants_per_pass < 1:
            raise ValueError(f"variants_per_pass must be >= 1, got {variants_per_pass}")
        adapter.check_scorable()
        self.adapter, self.show_progress = adapter, show_progress

    def run(self, proxy: Iterable[Mapping[str, Any]], per_batch: int, unit: str, desc: str,
            score_batch: Callable[[dict[str, torch.Tensor], Any], int], grad: bool = False) -> int:
        """Call `score_batch(inputs, bar)` on every batch; returns the number of samples scored.

        `grad=True` runs it with autograd enabled (gradient-based scorers) instead of in inference mode.
        """
        from transformers.utils.logging import tqdm

        total = per_batch * len(proxy) if hasattr(proxy, "__len__") else None
        samples = 0
        with torch.enable_grad() if grad else torch.inference_mode(), eval_mode(self.adapter.model), tqdm(
            total=total, unit=unit, desc=desc, disable=not self.show_progress
        ) as bar:
            for batch in proxy:
                samples += score_batch(prepare_inputs(batch, self.adapter), bar)
        if samples == 0:
            raise ValueError("the proxy set is empty: pass at least one batch of model inputs")
        return samples


@dataclass
class ChannelSubset:
    """Which channels of each component to score (boolean masks shaped like `ImportanceScores`' tensors)."""

    residual: torch.Tensor
    attention: list[torch.Tensor]
    ffn: list[torch.Tensor]

    @classmethod
    def full(cls, widths: Widths, components: Iterable[str] = COMPONENTS) -> ChannelSubset:
        """Every channel of the named components (of "residual", "attention", "ffn"), none of the others."""
        components = set(components)
        unknown = components - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
        fill = lambda name, width: torch.full((width,), name in components)  # noqa: E731
        layers = range(widths.num_hidden_layers)
        return cls(fill("residual", widths.hidden_size), [fill("attention", widths.attention_width) for _ in layers],
                   [fill("ffn", widths.intermediate_size) for _ in layers])

    def count(self) -> int:
        return int(self.residual.sum()) + sum(int(m.sum()) for m in (*self.attention, *self.ffn))

    def cost(self) -> int:
        """Work of exact-scoring these channels, in branch applications + readouts to one copy of a batch:
        a channel of branch j runs the suffix from branch j (residual channels: from the embedding)."""
        branches = 2 * len(self.ffn)
        total = int(self.residual.sum()) * (branches + 1)
        for layer, (attention, ffn) in enumerate(zip(self.attention, self.ffn)):
            total += int(attention.sum()) * (branches - 2 * layer + 1) + int(ffn.sum()) * (branches - 2 * layer)
        return total

    def as_dict(self) -> dict[str, Any]:
        """Channel indices per component (JSON-ready, for a scores file's meta)."""
        indices = lambda mask: mask.nonzero().flatten().tolist()  # noqa: E731
        return {"residual": indices(self.residual), "attention": [indices(m) for m in self.attention],
                "ffn": [indices(m) for m in self.ffn]}


class ExactKLScorer:
    """Scores all channels of all components in one pass over the proxy set.

    `variants_per_pass` channel removals are evaluated per forward pass; memory grows linearly with it.
    """

    def __init__(self, adapter: ModelAdapter, variants_per_pass: int = 16, show_progress: bool = True):
        self.proxy_pass = ProxyPass(adapter, variants_per_pass, show_progress)
        self.adapter, self.variants_per_pass = adapter, variants_per_pass

    def score(self, proxy: Iterable[Mapping[str, Any]], channels: ChannelSubset | None = None) -> ImportanceScores:
        """Scores of every channel, or only of `channels` (only their removals are run; the others are NaN)."""
        widths = self.adapter.widths
        layers = range(widths.num_hidden_layers)
        subset = channels if channels is not None else ChannelSubset.full(widths)
        residual = torch.zeros(widths.hidden_size, dtype=torch.float64)
        attention = [torch.zeros(widths.attention_width, dtype=torch.float64) for _ in layers]
        ffn = [torch.zeros(widths.intermediate_size, dtype=torch.float64) for _ in layers]
        scores = ImportanceScores(residual, attention, ffn, meta={"method": "kl"})
        chosen = ImportanceScores(subset.residual, subset.attention, subset.ffn)
        chosen.check_matches(widths)
        samples = self.proxy_pass.run(proxy, subset.count(), "channel", "UP-ViTs KL scores",
                                      lambda inputs, bar: self._score_batch(inputs, residual, attention, ffn, bar,
                                                                            subset))
        if channels is not None:
            for values, mask in zip((residual, *attention, *ffn), (subset.residual, *subset.attention, *subset.ffn)):
                values[~mask] = float("nan")
            scores.meta["exact_channels"] = subset.count()
        scores.meta["proxy_size"] = samples
        return scores

    # ------------------------------------------------------------------ one proxy batch
    def _score_batch(self, inputs, residual, attention, ffn, bar, subset: ChannelSubset) -> int:
        adapter = self.adapter
        embedded, context = adapter.embed(inputs)
        weights = adapter.token_weights(inputs)
        branches = adapter.branches()
        cache = [embedded]  # cache[i] is the input of branch i
        for branch in branches:
            cache.append(branch(cache[-1], context))
        rows = embedded.shape[0]
        reference = log_probs(adapter.readout(cache[-1], context))

        def sweep(scores: torch.Tensor, chosen: torch.Tensor, start: int, masking: Masking,
                  reference: torch.Tensor, mask_input: bool = False) -> None:
            """Remove each chosen channel in turn (variants stacked along the batch), add its KL to `scores`."""
            width, channels = scores.numel(), chosen.nonzero().flatten()
            for chunk in channels.split(self.variants_per_pass) if len(channels) else ():
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
                scores[chunk] += kl.cpu()
                bar.update(variants)

        def residual_masking(masks: torch.Tensor) -> AbstractContextManager:
            return residual_masked(adapter, masks)

        if subset.residual.any():
            # Masked LayerNorms round differently from stock ones: compare residual variants with the
            # unpruned model evaluated through the same masked path.
            keep_all = embedded.new_ones(rows, residual.numel())
            with residual_masking(keep_all):
                hidden = embedded
                for branch in branches:
                    hidden = branch(hidden, context)
                residual_reference = log_probs(adapter.readout(hidden, context))
            sweep(residual, subset.residual, 0, residual_masking, residual_reference, mask_input=True)
        for layer in range(len(attention)):
            sweep(attention[layer], subset.attention[layer], 2 * layer,
                  lambda m: attention_masked(adapter, layer, m), reference)
            sweep(ffn[layer], subset.ffn[layer], 2 * layer + 1, lambda m: ffn_masked(adapter, layer, m), reference)
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
