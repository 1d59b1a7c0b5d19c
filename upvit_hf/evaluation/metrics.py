"""Offline `evaluate` metrics: top-k accuracy and token-exact perplexity.

`evaluate.load("accuracy")` fetches a script from the Hub, so it fails offline and cannot give top-5 anyway.
These modules subclass `evaluate.Metric` directly: instantiate them (`TopKAccuracy()`), feed batches with
`add_batch`, then `compute()`. They keep their buffers in memory by default so nothing is written to the
`evaluate` cache folder.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import datasets
import evaluate
import numpy as np

_TOPK_DESCRIPTION = """Top-k accuracy: the fraction of samples whose reference label is among the k best predictions.
Config "default": `predictions` are class ids ranked best first (a list per sample, or one id).
Config "logits": `predictions` are per-class scores (logits or probabilities); ties are broken by class id."""

_PPL_DESCRIPTION = """Perplexity exp(total NLL / number of scored tokens), from per-chunk summed natural-log
negative log-likelihoods `nll` and the exact number of tokens each chunk scored `num_tokens`."""


class _InMemoryMetric(evaluate.Metric):
    """A Metric that keeps its Arrow buffer in RAM unless told otherwise (no cache files, no locks)."""

    def __init__(self, config_name: str | None = None, keep_in_memory: bool = True, **kwargs) -> None:
        super().__init__(config_name=config_name, keep_in_memory=keep_in_memory, **kwargs)


class TopKAccuracy(_InMemoryMetric):
    """Top-k accuracy (`top1`, `top5`, ... keys) from ranked class ids or from per-class scores."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "logits":
            features: datasets.Features | list[datasets.Features] = datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            )
        elif self.config_name in ("default", "ranked"):
            features = [
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ]
        else:
            raise ValueError(f"Unknown TopKAccuracy config {self.config_name!r}; use 'default' or 'logits'.")
        return evaluate.MetricInfo(
            description=_TOPK_DESCRIPTION,
            citation="",
            inputs_description="predictions: ranked class ids or per-class scores; references: class ids",
            features=features,
        )

    @staticmethod
    def ranked(scores: np.ndarray | Sequence[Sequence[float]], k: int) -> np.ndarray:
        """The k best class ids per row, best first (stable: lower id wins a tie)."""
        scores = np.asarray(scores)
        order = np.argsort(-scores, axis=-1, kind="stable")
        return order[..., :k]

    def _compute(
        self, predictions: list, references: list[int], top_k: Iterable[int] = (1, 5)
    ) -> dict[str, float]:
        ks = sorted({int(k) for k in top_k})
        if not ks or ks[0] < 1:
            raise ValueError(f"top_k must be positive integers, got {list(top_k)}")
        refs = np.asarray(references, dtype=np.int64)
        if refs.size == 0:
            raise ValueError("TopKAccuracy needs at least one sample.")
        if self.config_name == "logits":
            ranked = self.ranked(np.asarray(predictions, dtype=np.float64), max(ks))
            rows: list[np.ndarray] = list(ranked)
        else:
            rows = [np.atleast_1d(np.asarray(p, dtype=np.int64)) for p in predictions]
        result = {}
        for k in ks:
            hits = sum(int(ref in row[:k]) for row, ref in zip(rows, refs))
            result[f"top{k}"] = hits / len(refs)
        return result


class Perplexity(_InMemoryMetric):
    """Perplexity from summed NLL and exact scored-token counts (no mean-of-means bias)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_PPL_DESCRIPTION,
            citation="",
            inputs_description="nll: summed natural-log NLL of a chunk; num_tokens: tokens scored in that chunk",
            features=datasets.Features({"nll": datasets.Value("float64"), "num_tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll: list[float], num_tokens: list[int]) -> dict[str, float]:
        total_nll = float(math.fsum(nll))
        count = int(sum(num_tokens))
        if count <= 0:
            raise ValueError("Perplexity needs at least one scored token.")
        mean = total_nll / count
        return {"perplexity": math.exp(mean), "mean_nll": mean, "total_nll": total_nll, "num_tokens": count}
