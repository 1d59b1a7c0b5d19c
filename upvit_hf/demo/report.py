"""Turning the demo's results into text tables, `results.json`, `results.md` and a Figure-1-style PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_path

SHORT_LABELS = {
    "teacher": "teacher",
    "up_pruned": "UP, before FT",
    "up_distilled": "UP + distil",
    "scratch": "scratch + distil",
    "magnitude_pruned": "magnitude, before FT",
    "magnitude_distilled": "magnitude + distil",
    "random_pruned": "random, before FT",
    "random_distilled": "random + distil",
}
STYLES = {  # (marker, colour): the paper's method in red, baselines in greys/blues
    "teacher": ("*", "black"),
    "up_pruned": ("o", "#f4a3a3"),
    "up_distilled": ("o", "#d62728"),
    "scratch": ("s", "#1f77b4"),
    "magnitude_pruned": ("^", "#bdbdbd"),
    "magnitude_distilled": ("^", "#636363"),
    "random_pruned": ("v", "#c7e9c0"),
    "random_distilled": ("v", "#2ca02c"),
}


PERPLEXITY_TICKS = (20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000,
                    8000, 10000)


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{prefix}{unit}"
    return f"{value:.0f}{unit}"


def _metric_cell(summary: dict[str, Any], metric: str) -> str:
    scale, digits = (100.0, 1) if metric == "accuracy" else (1.0, 1)
    mean = summary["mean"] * scale
    if summary["std"] is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {summary['std'] * scale:.{digits}f}"


def section_table(section: dict[str, Any]) -> str:
    """A Markdown table (readable as plain text) of one section's rows, with a title and setup line."""
    metric = section["metric"]
    setup = section["setup"]
    rows = section["rows"]
    seeds = rows[0][metric]["n"]
    first = rows[0]
    unit = first["throughput_unit"]
    per = "image" if unit == "images/s" else setup.get("flops_per", "sample")
    metric_head = "top-1 accuracy (%)" if metric == "accuracy" else "test perplexity"
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "1 seed"
    teacher, pruned = setup["teacher_widths"], setup["pruned_widths"]
    lines = [
        f"### {section['task']}",
        "",
        f"Widths (hidden/heads×head_dim/FFN/layers) {teacher['hidden_size']}/{teacher['num_attention_heads']}×"
        f"{teacher['head_dim']}/{teacher['intermediate_size']}/{teacher['num_hidden_layers']} → "
        f"{pruned['hidden_size']}/{pruned['num_attention_heads']}×{pruned['head_dim']}/"
        f"{pruned['intermediate_size']}/{pruned['num_hidden_layers']} ({setup['flops_ratio']:.2f}× the FLOPs); "
        f"teacher {setup['recipe']['teacher']['steps']} steps, every student {setup['recipe']['student']['steps']} "
        f"steps of the same recipe; {metric_head}: {spread}.",
        "",
        f"| model | params | FLOPs / {per} | throughput ({unit}) | {metric_head} |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['label']} | {_si(row['params'])} | {_si(row['flops'])} | {_si(row['throughput'])} | "
            f"{_metric_cell(row[metric], metric)} |"
        )
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """All tables, the reload checks and the run time: the text `results.md` holds and the demo prints."""
    parts = ["# UP-ViTs demo results", ""]
    for name in ("vision", "language"):
        section = results[name]
        parts += [section_table(section), ""]
        for role, saved in section["saved_models"].items():
            status = "OK" if saved["reload_ok"] else "FAILED"
            parts.append(f"- saved {role}: `{saved['path']}` — stock from_pretrained reload {status} "
                         f"(max |Δlogit| {saved['max_abs_logit_diff']:.1e})")
        parts.append("")
    parts += findings(results), ""
    parts.append(f"Scratch rows: {results['vision']['setup']['scratch_recipe']}.")
    parts.append(f"Total time {results['seconds']:.0f}s on {results['environment']['torch_threads']} torch "
                 f"thread(s); mode: {'quick' if results['quick'] else 'full'}.")
    return "\n".join(parts) + "\n"


def findings(results: dict[str, Any]) -> str:
    """UP + distilled against each fine-tuned baseline, stated neutrally from the numbers."""
    lines = ["### UP + distilled vs. the baselines (positive = UP better)", ""]
    for name in ("vision", "language"):
        section = results[name]
        accuracy = section["metric"] == "accuracy"
        for item in results["comparisons"][name]:
            delta = item["advantage"] * (100.0 if accuracy else 1.0)
            unit = "accuracy points" if accuracy else "perplexity"
            lines.append(f"- {name}: vs {SHORT_LABELS[item['baseline']]}: {delta:+.1f} {unit}, "
                         f"better on {item['seeds_won']}/{item['seeds']} seed(s)")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _panel(axis: Any, section: dict[str, Any]) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    metric = section["metric"]
    rows = section["rows"]
    scale = 100.0 if metric == "accuracy" else 1.0
    same_arch = [row for row in rows if row["key"] != "teacher"]
    for row in rows:
        # rows sharing one architecture share one throughput: spread them a little so all stay visible
        dodge = 1.0 if row["key"] == "teacher" else 1.0 + 0.01 * (same_arch.index(row) - (len(same_arch) - 1) / 2)
        summary = row[metric]
        marker, colour = STYLES[row["key"]]
        axis.errorbar(row["throughput"] * dodge, summary["mean"] * scale,
                      yerr=None if summary["std"] is None else summary["std"] * scale,
                      fmt=marker, color=colour, markersize=11 if marker == "*" else 7, capsize=3,
                      label=SHORT_LABELS[row["key"]])
    axis.set_xlabel(f"throughput ({rows[0]['throughput_unit']}, CPU)")
    if metric == "accuracy":
        axis.set_ylabel("top-1 accuracy (%)")
    else:
        axis.set_ylabel("test perplexity (lower is better)")
        axis.set_yscale("log")
        low, high = axis.get_ylim()
        axis.set_yticks([t for t in PERPLEXITY_TICKS if low <= t <= high], minor=False)
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_minor_formatter(NullFormatter())
        axis.invert_yaxis()  # up = better, as in the accuracy panel
    axis.set_title(section["task"].split(" (")[0], fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")


def write_figure(results: dict[str, Any], path: Path) -> None:
    """Accuracy (and perplexity) against throughput, one point per model, as in the paper's Figure 1."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, name in zip(axes, ("vision", "language")):
        _panel(axis, results[name])
    figure.suptitle("UP-ViTs demo: accuracy vs. throughput (all pruned rows share one architecture; their points are "
                    "spread ±1% in x only for legibility)",
                    fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
