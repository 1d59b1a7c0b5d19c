"""Turning the demo's results into text tables, `results.json`, `results.md` and a Figure-1-style PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_json
from .methods import REFERENCE, SCRATCH, method_labels

COLOURS = {"kl": "#d62728", "magnitude": "#7f7f7f", "random": "#2ca02c", SCRATCH: "#1f77b4"}
FALLBACK_COLOURS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")  # methods added later
MARKERS = {"kl": "o", "magnitude": "^", "random": "v", SCRATCH: "s"}
PERPLEXITY_TICKS = (20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000,
                    8000, 10000)


def _style(key: str) -> tuple[str, str]:
    others = [k for k in method_labels() if k not in COLOURS]
    colour = COLOURS.get(key) or FALLBACK_COLOURS[others.index(key) % len(FALLBACK_COLOURS)]
    return MARKERS.get(key, "D"), colour


def _si(value: float, unit: str = "") -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f}{prefix}{unit}"
    return f"{value:.0f}{unit}"


def _scale(metric: str) -> float:
    return 100.0 if metric == "accuracy" else 1.0


def _metric_cell(summary: dict[str, Any], metric: str) -> str:
    scale = _scale(metric)
    mean = summary["mean"] * scale
    if summary["std"] is None:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {summary['std'] * scale:.1f}"


def _widths(w: dict[str, int]) -> str:
    return f"{w['hidden_size']}/{w['num_attention_heads']}×{w['head_dim']}/{w['intermediate_size']}"


def _wins(target: dict[str, Any], key: str, budget: str) -> str:
    for item in target["comparisons"]:
        if item["baseline"] == key and item["budget"] == budget:
            return f" · UP {item['seeds_won']}/{item['seeds']}"
    return ""


def section_tables(section: dict[str, Any]) -> str:
    """A cost table and a metric table (every method × width × budget) for one half of the demo."""
    metric = section["metric"]
    setup, recipe, teacher = section["setup"], section["setup"]["recipe"], section["teacher"]
    targets = section["targets"]
    unit = teacher["throughput_unit"]
    per = "image" if unit == "images/s" else setup.get("flops_per", "sample")
    metric_head = "top-1 accuracy (%)" if metric == "accuracy" else "test perplexity"
    seeds = len(recipe["seeds"])
    short, long = recipe["short_steps"], recipe["student"]["steps"]
    lines = [
        f"### {section['task']}",
        "",
        f"Teacher {_widths(setup['teacher_widths'])}, {setup['teacher_widths']['num_hidden_layers']} layers, "
        f"{recipe['teacher']['steps']} steps: {metric_head} {_metric_cell(teacher[metric], metric)}. "
        f"Every student: the same distillation run of {long} steps (constant learning rate after "
        f"{recipe['student']['warmup_steps']} warm-up steps), evaluated before it, after {short} steps and at "
        f"the end. Mean ± std over {seeds} seed(s) sharing the teacher. "
        f"\"UP k/n\": UP (exact KL) is better on k of n seeds.",
        "",
        f"| model | widths (hidden/heads×head_dim/FFN) | params | FLOPs / {per} | throughput ({unit}) |",
        "|---|---|---:|---:|---:|",
        f"| teacher | {_widths(setup['teacher_widths'])} | {_si(teacher['params'])} | {_si(teacher['flops'])} | "
        f"{_si(teacher['throughput'])} |",
    ]
    for target in targets:
        lines.append(f"| {target['name']} target ({target['flops_ratio']:.2f}× FLOPs) | "
                     f"{_widths(target['pruned_widths'])} | {_si(target['params'])} | {_si(target['flops'])} | "
                     f"{_si(target['throughput'])} |")
    lines += [
        "",
        f"| target | method | {metric_head}: before fine-tuning | after {short} steps | after {long} steps |",
        "|---|---|---:|---:|---:|",
    ]
    for target in targets:
        for index, (key, entry) in enumerate(target["methods"].items()):
            name = f"{target['name']} ({target['flops_ratio']:.2f}×)" if index == 0 else ""
            label = f"**{entry['label']}**" if key == REFERENCE else entry["label"]
            cells = [_metric_cell(entry[b], metric) + ("" if key == REFERENCE else _wins(target, key, b))
                     for b in ("before", "short", "long")]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(section_name: str, section: dict[str, Any]) -> list[str]:
    """UP (KL) against each baseline per budget, across the widths, stated neutrally from the numbers."""
    accuracy = section["metric"] == "accuracy"
    unit = "points" if accuracy else "perplexity"
    targets = section["targets"]
    budgets = {"before": "before FT", "short": f"after {section['setup']['recipe']['short_steps']} steps",
               "long": f"after {section['setup']['recipe']['student']['steps']} steps"}
    labels = {key: entry["label"] for key, entry in targets[0]["methods"].items()}
    lines = []
    for key in labels:
        if key == REFERENCE:
            continue
        for budget, budget_name in budgets.items():
            parts = []
            for target in targets:
                item = next(c for c in target["comparisons"] if c["baseline"] == key and c["budget"] == budget)
                parts.append(f"{target['name']} {item['advantage'] * _scale(section['metric']):+.1f} "
                             f"({item['seeds_won']}/{item['seeds']})")
            lines.append(f"- {section_name}, vs {labels[key]}, {budget_name}: " + ", ".join(parts))
    return [f"UP (exact KL) minus baseline, in {unit} (positive = UP better; seeds won in brackets):", "", *lines]


def markdown_report(results: dict[str, Any]) -> str:
    """All tables, the reload checks and the run time: the text `results.md` holds and the demo prints."""
    parts = ["# UP-ViTs demo results", ""]
    for name in ("vision", "language"):
        section = results[name]
        parts += [section_tables(section), ""]
        failed = [saved["path"] for saved in section["saved_models"].values() if not saved["reload_ok"]]
        worst = max(saved["max_abs_logit_diff"] for saved in section["saved_models"].values())
        parts.append(f"Saved teacher and first-seed UP students under `{name}/`: stock from_pretrained reload "
                     + (f"FAILED for {failed}" if failed else f"OK (max |Δlogit| {worst:.1e})"))
        parts.append("")
        parts += findings(name, section) + [""]
    parts.append(f"Scratch rows: {results['vision']['setup']['scratch_recipe']}.")
    parts.append(f"Total time {results['seconds']:.0f}s on {results['environment']['torch_threads']} torch "
                 f"thread(s); mode: {'quick' if results['quick'] else 'full'}.")
    return "\n".join(parts) + "\n"


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_results(results: dict[str, Any], path: Path) -> None:
    """results.json: non-finite numbers become null (JSON has no NaN)."""
    write_json(path, _finite(results))


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------- figure
def _metric_axis(axis: Any, metric: str) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    if metric == "accuracy":
        axis.set_ylabel("top-1 accuracy (%)")
        return
    axis.set_ylabel("test perplexity (log; up = better)")
    axis.set_yscale("log")
    low, high = axis.get_ylim()
    axis.set_yticks([t for t in PERPLEXITY_TICKS if low <= t <= high], minor=False)
    axis.yaxis.set_major_formatter(ScalarFormatter())
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.invert_yaxis()


def _error(summary_std: Any, scale: float) -> Any:
    return None if summary_std is None else summary_std * scale


def _short_name(section: dict[str, Any]) -> str:
    return section["task"].split(" (")[0].replace(" word-level language modelling", "")


def _throughput_panel(axis: Any, section: dict[str, Any]) -> None:
    """Metric after the long budget (solid) and the short one (dashed) against throughput, per method."""
    metric, scale = section["metric"], _scale(section["metric"])
    targets, teacher = section["targets"], section["teacher"]
    x = [t["throughput"] for t in targets]
    for key in targets[0]["methods"]:
        marker, colour = _style(key)
        for budget, style, alpha in (("long", "-", 1.0), ("short", "--", 0.45)):
            summaries = [t["methods"][key][budget] for t in targets]
            axis.errorbar(x, [s["mean"] * scale for s in summaries],
                          yerr=[_error(s["std"], scale) or 0.0 for s in summaries],
                          fmt=marker + style, color=colour, alpha=alpha, capsize=3, markersize=6, linewidth=1.6)
    axis.plot([teacher["throughput"]], [teacher[metric]["mean"] * scale], "*", color="black", markersize=15)
    widths = axis.secondary_xaxis("top")
    widths.set_xticks(x, [f"{t['name']}\n{t['flops_ratio']:.2f}× FLOPs" for t in targets], fontsize=8)
    widths.tick_params(colors="#555555")
    axis.set_xlabel(f"measured throughput ({teacher['throughput_unit']}, CPU)")
    _metric_axis(axis, metric)
    recipe = section["setup"]["recipe"]
    axis.set_title(f"{_short_name(section)}: after {recipe['student']['steps']} (solid) and "
                   f"{recipe['short_steps']} (dashed) distillation steps", fontsize=10, pad=28)
    axis.grid(alpha=0.3)


def _steps_panel(axis: Any, section: dict[str, Any]) -> None:
    """Metric against fine-tuning steps at the recipe's curve target, per method, mean ± std over seeds."""
    metric, scale = section["metric"], _scale(section["metric"])
    recipe = section["setup"]["recipe"]
    target = next(t for t in section["targets"] if t["name"] == recipe["curve_target"])
    from matplotlib.ticker import NullLocator, ScalarFormatter

    for key in target["methods"]:
        marker, colour = _style(key)
        curve = target["methods"][key]["curve"]
        axis.errorbar(curve["steps"], [m * scale for m in curve["mean"]],
                      yerr=[_error(s, scale) or 0.0 for s in curve["std"]],
                      fmt=marker + "-", color=colour, capsize=3, markersize=5)
    axis.axhline(section["teacher"][metric]["mean"] * scale, color="black", linestyle=":")
    steps = target["methods"][REFERENCE]["curve"]["steps"]
    axis.set_xscale("symlog", linthresh=max(1, min(s for s in steps if s > 0)))
    axis.set_xticks(steps)
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel("distillation steps (0 = straight after pruning; symlog)")
    _metric_axis(axis, metric)
    axis.set_title(f"{_short_name(section)}: {target['name']} target ({target['flops_ratio']:.2f}× FLOPs) "
                   "during fine-tuning", fontsize=10)
    axis.grid(alpha=0.3)


def write_figure(results: dict[str, Any], path: Path) -> None:
    """Top: metric vs throughput across widths (the paper's Figure 1); bottom: metric vs fine-tuning steps."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    for column, name in enumerate(("vision", "language")):
        _throughput_panel(axes[0, column], results[name])
        _steps_panel(axes[1, column], results[name])
    from matplotlib.lines import Line2D

    shown = list(dict.fromkeys(key for name in ("vision", "language")
                               for key in results[name]["targets"][0]["methods"]))

    handles = [Line2D([], [], color=_style(key)[1], marker=_style(key)[0], label=label)
               for key, label in method_labels(shown).items()]
    handles.append(Line2D([], [], color="black", marker="*", markersize=12, linestyle=":", label="teacher"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=10, frameon=False)
    seeds = {name: len(results[name]["setup"]["recipe"]["seeds"]) for name in ("vision", "language")}
    figure.suptitle("UP-ViTs demo: pruned (by each criterion) and distilled vs. the same widths from scratch; "
                    f"error bars: std over {seeds['vision']} (digits) / {seeds['language']} (PTB) seeds",
                    fontsize=11)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
