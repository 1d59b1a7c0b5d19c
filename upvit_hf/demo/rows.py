"""The rows every results table has, and how per-seed values become one row (mean ± sample std)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .measure import Cost

ROW_LABELS: dict[str, str] = {
    "teacher": "teacher (unpruned)",
    "up_pruned": "UP-pruned (KL), before fine-tuning",
    "up_distilled": "UP-pruned (KL) + distilled",
    "scratch": "same arch from scratch + same distillation",
    "magnitude_pruned": "magnitude-pruned, before fine-tuning",
    "magnitude_distilled": "magnitude-pruned + distilled",
    "random_pruned": "random-pruned, before fine-tuning",
    "random_distilled": "random-pruned + distilled",
}
"""Row keys in table order. "Scratch" is the fair baseline: the pruned architecture from random init,
trained with exactly the students' recipe (same steps, same CE + α·T²·KL loss from the same teacher)."""

PRUNING_METHODS = {"up": "kl", "magnitude": "magnitude", "random": "random"}
"""Row prefix → `UPPruner.score` method."""

METHOD_NAMES = {"up": "UP (KL)", "magnitude": "magnitude", "random": "random"}


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None for a single value) of per-seed results."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else math.nan,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def make_row(key: str, cost: Cost, metric: str, values: Sequence[float], **extra: Any) -> dict[str, Any]:
    """One table row: its label, the architecture's cost and the metric over seeds."""
    return {"key": key, "label": ROW_LABELS[key], **cost.to_dict(), metric: summarize(values), **extra}


def comparisons(section: dict[str, Any], against: str = "up_distilled") -> list[dict[str, Any]]:
    """How `against` fares against every other fine-tuned row: mean difference and seeds won.

    Positive `advantage` always means `against` is better (higher accuracy or lower perplexity).
    """
    metric = section["metric"]
    sign = 1.0 if section["higher_is_better"] else -1.0
    rows = {row["key"]: row for row in section["rows"]}
    ours = rows[against][metric]["values"]
    result = []
    for key in ("scratch", "magnitude_distilled", "random_distilled"):
        if key not in rows:
            continue
        theirs = rows[key][metric]["values"]
        wins = sum(sign * (a - b) > 0 for a, b in zip(ours, theirs))
        result.append({
            "baseline": key,
            "advantage": sign * (statistics.fmean(ours) - statistics.fmean(theirs)),
            "seeds_won": wins,
            "seeds": len(ours),
        })
    return result
