"""How well cheap criteria agree with exact KL, and what they cost, on trained teachers, side by side in one run.

Teachers are trained with the demo's code and recipes (upvit_hf/demo): a ViT on 8×8 digits (4 layers, 64 wide,
FFN 128, 4 heads; --vision-hidden/--vision-ffn change it) and a GPT-2 on word-level Penn Treebank (2 layers,
64 wide, FFN 256). For each criterion — exact KL, Fisher with several numbers of labels per input (the default
4: the 3 most likely digits + one drawn from the rest; 4 drawn labels per token for the language model),
Fisher (--refine-from labels) refined by exact KL in bands around the cut, hybrid (exact residual + attention, Fisher FFN),
magnitude, random — it reports wall time and speed-up over exact, Spearman ρ against exact per component
(attention and FFN: mean over layers), Jaccard of the kept sets at 75% and 50% keep, and the accuracy /
perplexity of the model pruned to the first keep ratio, before fine-tuning. Refined rows refine that cut
(their time includes the Fisher pass); "needed bands" are the per-component bands that, in hindsight,
reproduce the exact kept sets. Finally the passes that scoring DeiT-B on 2000 images takes with each
criterion. Prints a table per family and one JSON line.

    python benchmarks/bench_approx.py                          # both families; ~10 minutes on 2 CPU cores
    python benchmarks/bench_approx.py --family vision --quick  # a smoke run: ~1 minute
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from transformers import GPT2LMHeadModel, ViTForImageClassification, set_seed

from upvit_hf import ImportanceScores, PruningTarget, UPPruner
from upvit_hf.adapters import Widths
from upvit_hf.demo import language, vision
from upvit_hf.demo.data import TensorDictDataset, lm_blocks, load_digit_splits, load_treebank
from upvit_hf.demo.recipe import language_recipe, vision_recipe
from upvit_hf.demo.training import train
from upvit_hf.proxy import image_proxy, text_proxy
from upvit_hf.scoring import DEFAULT_LABELS_PER_INPUT, ChannelSubset
from upvit_hf.targets import PruningPlan

COMPONENTS = ("residual", "attention", "ffn")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("vision", "language", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small teachers and proxy sets (a smoke run)")
    parser.add_argument("--proxy-images", type=int, default=256)
    parser.add_argument("--vision-hidden", type=int, default=64, help="ViT width (the demo's: 64)")
    parser.add_argument("--vision-ffn", type=int, default=128, help="ViT FFN width (the demo's: 128)")
    parser.add_argument("--proxy-sequences", type=int, default=8, help="language proxy: sequences of 64 tokens")
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 16],
                        help="labels per input of the Fisher runs besides the default (16 covers the digits' 10 "
                             "classes: the exact expectation)")
    parser.add_argument("--refine-from", type=int, default=DEFAULT_LABELS_PER_INPUT,
                        help="labels per input of the Fisher scores that refinement starts from (one of the runs)")
    parser.add_argument("--bands", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="refinement bands")
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.75, 0.5],
                        help="keep ratios for Jaccard; the first is also the ratio of the evaluated pruned models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------- comparisons
def per_component(scores: ImportanceScores) -> dict[str, list[torch.Tensor]]:
    return {"residual": [scores.residual], "attention": scores.attention, "ffn": scores.ffn}


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: Pearson correlation of the ranks (scores are continuous; ties are not averaged)."""
    ranks = [torch.argsort(torch.argsort(x)).double() for x in (a, b)]
    ranks = [r - r.mean() for r in ranks]
    return float((ranks[0] * ranks[1]).sum() / (ranks[0].norm() * ranks[1].norm()))


def spearman(scores: ImportanceScores, exact: ImportanceScores) -> dict[str, float]:
    """Spearman ρ per component (attention and FFN: mean over layers)."""
    ours, reference = per_component(scores), per_component(exact)
    return {name: sum(rank_correlation(a, b) for a, b in zip(ours[name], reference[name])) / len(ours[name])
            for name in COMPONENTS}


def kept(scores: ImportanceScores, original: Widths, pruned: Widths) -> dict[str, list[set[int]]]:
    plan = PruningPlan.from_scores(scores, original, pruned)
    as_sets = lambda tensors: [set(t.tolist()) for t in tensors]  # noqa: E731
    return {"residual": as_sets([plan.residual]), "attention": as_sets(plan.attention), "ffn": as_sets(plan.ffn)}


def jaccard(scores: ImportanceScores, exact: ImportanceScores, original: Widths, pruned: Widths) -> dict[str, float]:
    """Jaccard index of the kept sets per component (attention: the plan's merged-head groups; mean over layers)."""
    ours, reference = kept(scores, original, pruned), kept(exact, original, pruned)
    return {name: sum(len(a & b) / len(a | b) for a, b in zip(ours[name], reference[name])) / len(ours[name])
            for name in COMPONENTS}


def needed_bands(approximate: ImportanceScores, exact: ImportanceScores, pruned: Widths) -> dict[str, float]:
    """Per component, the smallest band (fraction of the width, or of a head group's width) with which refining
    `approximate` reproduces the exact kept sets: every exact-kept channel must rank above the band's bottom
    and every exact-dropped one below its top. Known only in hindsight (it needs the exact scores)."""
    def needed(a: torch.Tensor, e: torch.Tensor, keep: int, groups: int) -> float:
        worst = 0
        for a_group, e_group in zip(a.view(groups, -1), e.view(groups, -1)):
            rank = torch.empty(len(a_group), dtype=torch.long)
            rank[torch.argsort(a_group, descending=True, stable=True)] = torch.arange(len(a_group))
            kept = torch.zeros(len(e_group), dtype=torch.bool)
            kept[torch.topk(e_group, keep).indices] = True
            worst = max(worst, *(rank[kept] - keep + 1).tolist(), *(keep - rank[~kept]).tolist())
        return worst / (len(a) // groups)

    heads = pruned.num_attention_heads
    return {
        "residual": needed(approximate.residual, exact.residual, pruned.hidden_size, 1),
        "attention": max(needed(a, e, pruned.head_dim, heads) for a, e in zip(approximate.attention, exact.attention)),
        "ffn": max(needed(a, e, pruned.intermediate_size, 1) for a, e in zip(approximate.ffn, exact.ffn)),
    }


def timed(run: Callable[[], ImportanceScores]) -> tuple[ImportanceScores, float]:
    start = time.perf_counter()
    scores = run()
    return scores, time.perf_counter() - start


def compare(teacher, proxy, evaluate: Callable[[Any], float], args) -> dict:
    """Every criterion on one teacher and proxy set: timings, agreement with exact, pruned metric."""
    pruner = UPPruner(teacher)
    fisher_labels = list(dict.fromkeys([DEFAULT_LABELS_PER_INPUT, *args.labels, args.refine_from]))
    original = pruner.adapter.widths
    targets = {keep: PruningTarget.from_ratio(teacher.config, keep) for keep in args.keeps}
    widths = {keep: pruner.check_target(t) for keep, t in targets.items()}

    runs: dict[str, tuple[ImportanceScores, float]] = {}
    runs["exact"] = timed(lambda: pruner.score(proxy, variants_per_pass=32, show_progress=False))
    for labels in fisher_labels:
        name = f"fisher ({labels} label{'s' * (labels > 1)}{', default' * (labels == DEFAULT_LABELS_PER_INPUT)})"
        runs[name] = timed(lambda: pruner.score(proxy, method="fisher", labels_per_input=labels, seed=args.seed,
                                                show_progress=False))
    base, base_seconds = runs[next(k for k in runs if k.startswith(f"fisher ({args.refine_from} label"))]
    runs["hybrid"] = timed(lambda: pruner.score(proxy, method="hybrid", variants_per_pass=32, show_progress=False))
    runs["magnitude"] = timed(lambda: pruner.score(method="magnitude"))
    runs["random"] = timed(lambda: pruner.score(method="random", seed=args.seed))

    exact, exact_seconds = runs["exact"]
    rows = []
    for name, (scores, seconds) in runs.items():
        rows.append({
            "criterion": name, "seconds": seconds, "speedup_vs_exact": exact_seconds / seconds,
            "spearman": spearman(scores, exact),
            "jaccard": {str(k): jaccard(scores, exact, original, w) for k, w in widths.items()},
            "metric_before_finetuning": evaluate(pruner.prune(targets[args.keeps[0]], scores)),
            **({"exact_cost_fraction": scores.meta["exact_cost_fraction"]} if name == "hybrid" else {}),
        })
    keep = args.keeps[0]  # refinement is for one cut: the evaluated one
    hindsight = needed_bands(base, exact, widths[keep])
    for band in [*args.bands, hindsight]:
        refined, seconds = timed(lambda: pruner.refine(base, targets[keep], proxy, band=band,
                                                       variants_per_pass=32, show_progress=False))
        seconds += base_seconds
        agreement = jaccard(refined, exact, original, widths[keep])
        rows.append({
            "criterion": f"refined (band {band:g})" if isinstance(band, float) else "refined (needed bands)",
            "band": band, "seconds": seconds, "speedup_vs_exact": exact_seconds / seconds,
            "spearman": spearman(refined, exact), "jaccard": {str(keep): agreement},
            "kept_sets_equal_exact": all(v == 1.0 for v in agreement.values()),
            "exact_cost_fraction": refined.meta["exact_cost_fraction"],
            "metric_before_finetuning": evaluate(pruner.prune(targets[keep], refined)),
        })
    return {"teacher_widths": original.as_dict(), "proxy_size": exact.meta["proxy_size"],
            "teacher_metric": evaluate(teacher), "rows": rows}


# ---------------------------------------------------------------------------------------------- teachers
def run_vision(args) -> dict:
    recipe = vision_recipe(args.quick)
    if not args.quick:
        recipe = replace(recipe, hidden_size=args.vision_hidden, intermediate_size=args.vision_ffn)
    splits = load_digit_splits()
    train_set = TensorDictDataset(pixel_values=splits.pixel_values(splits.train),
                                  labels=torch.tensor(splits.train["label"]))
    set_seed(args.seed)
    teacher = ViTForImageClassification(vision.teacher_config(recipe))
    start = time.perf_counter()
    train(teacher, train_set, recipe.teacher, args.seed)
    training = time.perf_counter() - start
    proxy = image_proxy(splits.train, splits.processor, size=64 if args.quick else args.proxy_images,
                        seed=args.seed, batch_size=50, num_channels=1)
    result = compare(teacher, proxy, lambda m: vision.accuracy(m, splits), args)
    return {"task": "digits ViT", "metric": "accuracy", "teacher_training_seconds": training, **result}


def run_language(args) -> dict:
    recipe = language_recipe(args.quick)
    data = load_treebank()
    set_seed(args.seed)
    teacher = GPT2LMHeadModel(language.teacher_config(recipe, data))
    start = time.perf_counter()
    train(teacher, lm_blocks(data.train, recipe.block_size), recipe.teacher, args.seed)
    training = time.perf_counter() - start
    sequences = 2 if args.quick else args.proxy_sequences
    proxy = text_proxy(data.train, size=sequences, seq_len=recipe.block_size, seed=args.seed, batch_size=sequences)
    test = data.test[: 4096 if args.quick else 20000]
    result = compare(teacher, proxy, lambda m: language.perplexity(m, test, recipe), args)
    return {"task": "Penn Treebank GPT-2", "metric": f"perplexity ({len(test)} test tokens)",
            "teacher_training_seconds": training, **result}


# ---------------------------------------------------------------------------------------------- projection
def deit_b_projection(labels: list[int], bands: list[float]) -> dict:
    """Passes to score DeiT-B (12 layers, 768 wide, FFN 3072) on 2000 images.

    Exact: every channel's variant runs the suffix of the network from its branch, i.e. `cost` branch
    applications + readouts per image, or cost / 25 full forward passes. Fisher: one forward and one backward
    pass per image and label draw (1000 classes: labels are drawn). A refinement band ±F around a cut at
    rank k of n holds 2F·n channels of each component, so it costs about 2F of exact (at 50% keep).
    """
    widths = Widths(768, 12, 64, 3072, 12)
    per_image = ChannelSubset.full(widths).cost() / (2 * widths.num_hidden_layers + 1)
    images = 2000
    return {
        "exact_full_forward_equivalents": per_image * images,
        "exact_channel_variants": ChannelSubset.full(widths).count() * images,
        **{f"fisher_{k}_labels": {"forwards": images, "backwards": images * k}
           for k in sorted({DEFAULT_LABELS_PER_INPUT, *labels})},
        **{f"refined_band_{b:g}_forward_equivalents": min(1.0, 2 * b) * per_image * images for b in bands},
    }


def print_table(result: dict) -> None:
    print(f"\n{result['task']}: teacher {result['metric']} {result['teacher_metric']:.4g}, "
          f"widths {result['teacher_widths']}, proxy {result['proxy_size']}")
    keeps = list(result["rows"][0]["jaccard"])
    header = (f"{'criterion':<28}{'seconds':>9}{'speedup':>9}{'rho res':>9}{'rho att':>9}{'rho ffn':>9}"
              + "".join(f"{'J' + k + ' r/a/f':>18}" for k in keeps) + f"{'pruned':>10}{'exact cost':>12}")
    print(header)
    for row in result["rows"]:
        rho = row["spearman"]
        jac = "".join(f"{'/'.join(format(row['jaccard'][k][c], '.2f') for c in COMPONENTS) if k in row['jaccard'] else '-':>18}"
                      for k in keeps)
        cost = row.get("exact_cost_fraction")
        cost = "" if cost is None else f"{cost:.2f}"
        print(f"{row['criterion']:<28}{row['seconds']:>9.2f}{row['speedup_vs_exact']:>9.1f}{rho['residual']:>9.3f}"
              f"{rho['attention']:>9.3f}{rho['ffn']:>9.3f}{jac}{row['metric_before_finetuning']:>10.4g}{cost:>12}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    if args.family in ("vision", "both"):
        results["vision"] = run_vision(args)
        print_table(results["vision"])
    if args.family in ("language", "both"):
        results["language"] = run_language(args)
        print_table(results["language"])
    results["deit_b_2000_images"] = deit_b_projection(args.labels, args.bands)
    print("\n" + json.dumps({"benchmark": "bench_approx", "args": vars(args), **results}))


if __name__ == "__main__":
    main()
