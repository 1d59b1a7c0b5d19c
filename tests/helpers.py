"""Helpers several test modules share: random scores, top-k channel sets, and float64 KL references."""

from __future__ import annotations

import torch

from upvit_hf import ImportanceScores
from upvit_hf.adapters import adapter_class_for_config


def random_scores(config, seed: int = 0) -> ImportanceScores:
    """Seeded float64 scores with the shapes of a model with `config` (widths read by its adapter)."""
    widths = adapter_class_for_config(config).read_widths(config)
    g = torch.Generator().manual_seed(seed)
    layers = range(widths.num_hidden_layers)
    return ImportanceScores(
        residual=torch.rand(widths.hidden_size, generator=g, dtype=torch.float64),
        attention=[torch.rand(widths.attention_width, generator=g, dtype=torch.float64) for _ in layers],
        ffn=[torch.rand(widths.intermediate_size, generator=g, dtype=torch.float64) for _ in layers],
    )


def top_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the `k` largest scores, in increasing order (the channels pruning keeps)."""
    return torch.argsort(scores, descending=True)[:k].sort().values


def model_logits(model, batch) -> torch.Tensor:
    """The logits of an image or token batch, inputs cast to the model's dtype, without a graph."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        if "pixel_values" in batch:
            return model(pixel_values=batch["pixel_values"].to(dtype)).logits
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits


def kl_from_logits(q_logits: torch.Tensor, p_logits: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """Σ KL(q ‖ p) over every row (natural log, float64), each row weighted by `weights` when given."""
    q, p = torch.log_softmax(q_logits.double(), -1), torch.log_softmax(p_logits.double(), -1)
    kl = (q.exp() * (q - p)).sum(-1)
    return float((kl * weights).sum() if weights is not None else kl.sum())


def kl_sum(reference_model, model, batches) -> float:
    """Σ over samples (and unpadded positions) of KL(reference ‖ model), natural log, float64."""
    return sum(
        kl_from_logits(model_logits(reference_model, batch), model_logits(model, batch), batch.get("attention_mask"))
        for batch in batches
    )


def topk_accuracy_bounds(logits: torch.Tensor, labels: torch.Tensor, k: int, tol: float = 1e-4) -> tuple[float, float]:
    """The top-k accuracy any CPU can report for `logits`: a sample whose label's logit is within `tol` of the
    k-th largest is a near-tie that rounding may decide either way, so it counts in the upper bound only."""
    kth = logits.topk(min(k, logits.shape[-1]), dim=-1).values[:, -1]
    label_logit = logits.gather(-1, labels[:, None])[:, 0]
    surely_hit = label_logit > kth + tol
    maybe_hit = label_logit >= kth - tol
    return float(surely_hit.double().mean()), float(maybe_hit.double().mean())
