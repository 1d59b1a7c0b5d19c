"""How per-seed curves become table entries: mean ± sample std per budget, and seeds won against UP (KL)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from ..adapters import adapter_for
from .measure import Cost
from .methods import REFERENCE, method_labels
from .protocol import Sweep, SweepRecipe

BUDGETS = ("before", "short", "long")


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None for a single value) of per-seed results."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values) if values else math.nan,
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def budget_steps(short_steps: int, long_steps: int) -> dict[str, int]:
    return {"before": 0, "short": short_steps, "long": long_steps}


def method_entries(curves: dict[str, list[dict[int, float]]], steps: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Per method: its label, each budget's summary over seeds, and the whole mean ± std curve."""
    entries = {}
    for key, label in method_labels(list(curves)).items():
        per_seed = curves[key]
        checkpoints = sorted(per_seed[0])
        entries[key] = {
            "label": label,
            **{budget: summarize([curve[step] for curve in per_seed]) for budget, step in steps.items()},
            "curve": {"steps": checkpoints,
                      **{field: [summarize([c[s] for c in per_seed])[field] for s in checkpoints]
                         for field in ("mean", "std")}},
        }
    return entries


def comparisons(methods: dict[str, dict[str, Any]], higher_is_better: bool) -> list[dict[str, Any]]:
    """UP (KL) against every other method at every budget: mean advantage and seeds won (paired by seed).

    Positive `advantage` always means UP (KL) is better (higher accuracy or lower perplexity).
    """
    sign = 1.0 if higher_is_better else -1.0
    result = []
    for key in methods:
        if key == REFERENCE:
            continue
        for budget in BUDGETS:
            ours, theirs = methods[REFERENCE][budget]["values"], methods[key][budget]["values"]
            result.append({
                "baseline": key,
                "budget": budget,
                "advantage": sign * (statistics.fmean(ours) - statistics.fmean(theirs)),
                "seeds_won": sum(sign * (a - b) > 0 for a, b in zip(ours, theirs)),
                "seeds": len(ours),
            })
    return result


def target_entries(sweep: Sweep, recipe: SweepRecipe, costs: dict[str, Cost],
                   higher_is_better: bool) -> list[dict[str, Any]]:
    """One entry per target width: its widths, cost, every method's budgets and curves, and comparisons."""
    steps = budget_steps(recipe.short_steps, recipe.student.steps)
    entries = []
    for name in recipe.targets:
        methods = method_entries(sweep.curves[name], steps)
        entries.append({
            "name": name,
            "pruned_widths": adapter_for(sweep.students[name]).widths.as_dict(),
            "flops_ratio": costs[name].flops / costs["teacher"].flops,
            **costs[name].to_dict(),
            "methods": methods,
            "comparisons": comparisons(methods, higher_is_better),
        })
    return entries
