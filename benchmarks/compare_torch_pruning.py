"""Torch-Pruning vs UP-ViTs on the demo's trained digits teacher, side by side in one run.

Both prune the same teacher to the demo's mild target (hidden 64→48, 4 heads of 16→12 dims, FFN 128→96,
no head merging). Torch-Pruning runs through its documented API (`tp.pruner.BasePruner` with `num_heads`,
`prune_head_dims=True`, `prune_num_heads=False`, as in its Hugging Face ViT example) with its magnitude
(L1) and group-Taylor importance (gradients of the cross-entropy on the same proxy images UP scores on).

For each pruned model the benchmark reports whether it is correct as returned (the head count it actually
runs with, whether `save_pretrained` + stock `from_pretrained` gives it back), its accuracy before
fine-tuning and after the demo's short and long distillation budgets (same recipe for every model), and
the same after a CORRECTION that lives here, clearly labelled: setting every attention module's
`head_dim`/`scaling` and the config's widths to what the pruned weights mean (what Torch-Pruning's own
example does by hand). UP's output needs no correction. Mean ± std over seeds; a JSON line at the end.

    pip install -e ".[compare]"      # torch-pruning
    python benchmarks/compare_torch_pruning.py            # ~2 CPU-minutes
    python benchmarks/compare_torch_pruning.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from transformers import AutoModelForImageClassification, ViTForImageClassification, set_seed

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.demo.data import TensorDictDataset, load_digit_splits
from upvit_hf.demo.recipe import vision_recipe
from upvit_hf.demo.training import train
from upvit_hf.demo.vision import accuracy, teacher_config
from upvit_hf.proxy import image_proxy, sample


def tp_prune(teacher: ViTForImageClassification, importance: str, target: PruningTarget,
             proxy: list[dict[str, torch.Tensor]], labels: list[torch.Tensor]) -> ViTForImageClassification:
    """Torch-Pruning's documented recipe for an HF ViT: uniform ratio, head dims pruned, head count kept."""
    model = copy.deepcopy(teacher).train().requires_grad_(True)  # the distillation teacher may be frozen
    ratio = 1 - target.hidden_size / teacher.config.hidden_size
    num_heads = {}
    for layer in model.vit.layers:
        attention = layer.attention
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            num_heads[proj] = attention.num_attention_heads
    imp = tp.importance.GroupMagnitudeImportance(p=1) if importance == "magnitude" else tp.importance.GroupTaylorImportance()
    example = proxy[0]["pixel_values"][:1]
    pruner = tp.pruner.BasePruner(
        model, example, importance=imp, pruning_ratio=ratio, ignored_layers=[model.classifier],
        num_heads=num_heads, prune_head_dims=True, prune_num_heads=False,
        output_transform=lambda out: out.logits.sum(),
    )
    if importance == "taylor":  # the group-Taylor criterion reads accumulated gradients
        model.zero_grad()
        for batch, y in zip(proxy, labels):
            F.cross_entropy(model(**batch).logits, y).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def correct_by_hand(model: ViTForImageClassification, target: PruningTarget) -> ViTForImageClassification:
    """CORRECTION (not part of Torch-Pruning): make the modules and the config say what the weights mean."""
    fixed = copy.deepcopy(model)
    heads = target.num_attention_heads
    for layer in fixed.vit.layers:
        attention = layer.attention
        attention.num_attention_heads = heads
        attention.head_dim = attention.q_proj.out_features // heads
        attention.scaling = attention.head_dim ** -0.5
    fixed.config.hidden_size = target.hidden_size
    fixed.config.intermediate_size = target.intermediate_size
    fixed.config.head_dim = fixed.vit.layers[0].attention.head_dim
    return fixed


def inspect(model: ViTForImageClassification, target: PruningTarget, probe: torch.Tensor) -> dict[str, Any]:
    """Heads it actually runs with, whether it runs, and whether stock from_pretrained gives it back."""
    attention = model.vit.layers[0].attention
    report: dict[str, Any] = {"runs_with_heads": attention.q_proj.out_features // attention.head_dim,
                              "expected_heads": target.num_attention_heads,
                              "head_dim": attention.head_dim, "q_proj_out": attention.q_proj.out_features}
    with torch.no_grad():
        expected = model(pixel_values=probe).logits
    report["runs"] = True
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
        try:
            reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
            with torch.no_grad():
                diff = (reloaded(pixel_values=probe).logits - expected).abs().max().item()
            report["reload"] = "ok" if diff < 1e-5 else f"loads, but logits differ by {diff:.3g}"
        except Exception as error:  # noqa: BLE001 - the failure is the finding
            report["reload"] = f"fails ({type(error).__name__}: {str(error).splitlines()[0][:60]}…)"
    report["correct_as_returned"] = (report["runs_with_heads"] == target.num_attention_heads
                                     and report["reload"] == "ok")
    return report


def summary(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", default="mild", help="one of the demo's vision targets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipe = vision_recipe()
    target = recipe.targets[args.target]
    splits = load_digit_splits()
    train_set = TensorDictDataset(pixel_values=splits.pixel_values(splits.train),
                                  labels=torch.tensor(splits.train["label"]))
    evaluate: Callable[[Any], float] = lambda model: accuracy(model, splits)  # noqa: E731
    set_seed(recipe.teacher_seed)
    teacher = ViTForImageClassification(teacher_config(recipe))
    train(teacher, train_set, recipe.teacher, recipe.teacher_seed)
    print(f"teacher: {evaluate(teacher):.4f} top-1 on {len(splits.test)} held-out digits")
    probe = splits.pixel_values(splits.test)[:32]

    curves: dict[str, list[dict[int, float]]] = {}
    checks: dict[str, dict[str, Any]] = {}
    for seed in args.seeds:
        proxy = image_proxy(splits.train, splits.processor, size=recipe.proxy_size, seed=seed, num_channels=1)
        subset = sample(splits.train, recipe.proxy_size, seed)  # the proxy's rows, in the proxy's order
        labels = [torch.tensor(subset["label"][i:i + 64]) for i in range(0, recipe.proxy_size, 64)]
        pruner = UPPruner(teacher)
        candidates = {"UP (exact KL)": pruner.prune(target, pruner.score(proxy, method="kl", show_progress=False,
                                                                          variants_per_pass=32))}
        for importance in ("magnitude", "taylor"):
            returned = tp_prune(teacher, importance, target, proxy, labels)
            candidates[f"Torch-Pruning {importance}, as returned"] = returned
            candidates[f"Torch-Pruning {importance} + CORRECTION"] = correct_by_hand(returned, target)
        for name, model in candidates.items():
            checks.setdefault(name, inspect(model, target, probe))
            run = train(model, train_set, recipe.student, seed, teacher=teacher, alpha=recipe.alpha,
                        temperature=recipe.temperature, evaluate=evaluate, eval_steps=(recipe.short_steps,
                                                                                       recipe.student.steps))
            curves.setdefault(name, []).append(run.curve)
        print(f"seed {seed} done")

    budgets = {"before": 0, "short": recipe.short_steps, "long": recipe.student.steps}
    reference = curves["UP (exact KL)"]
    rows = {}
    print(f"\nmild target {target}; accuracy (%) mean ± std over {len(args.seeds)} seeds; "
          f"'UP k/n' = UP better on k of n seeds\n")
    print(f"| model | runs with heads | reload | before FT | after {budgets['short']} steps | "
          f"after {budgets['long']} steps |\n|---|---|---|---:|---:|---:|")
    for name, runs in curves.items():
        row = {budget: summary([r[step] for r in runs]) for budget, step in budgets.items()}
        wins = {budget: sum(u[step] > r[step] for u, r in zip(reference, runs)) for budget, step in budgets.items()}
        rows[name] = {**checks[name], **row, "up_seeds_won": wins}
        cells = []
        for budget in budgets:
            s = row[budget]
            cell = f"{100 * s['mean']:.1f}" + ("" if s["std"] is None else f" ± {100 * s['std']:.1f}")
            cells.append(cell + ("" if name == "UP (exact KL)" else f" · UP {wins[budget]}/{len(runs)}"))
        check = checks[name]
        print(f"| {name} | {check['runs_with_heads']} of {check['expected_heads']} | {check['reload']} | "
              + " | ".join(cells) + " |")
    print(json.dumps({"benchmark": "compare_torch_pruning", "torch_pruning": tp.__version__,
                      "target": args.target, "seeds": args.seeds, "rows": rows}))


if __name__ == "__main__":
    main()
