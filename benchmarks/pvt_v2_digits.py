"""UP-ViTs on a hierarchical, convolutional ViT: a small PVTv2 trained on scikit-learn's 8×8 digits.

Train a two-stage PVTv2 (stage 0 with spatial reduction 2, stage 1 without), then cut every stage to half
its width, keeping its heads and FFN ratio (as PVTv2-B2 -> B0), by the exact KL scores, by the L1 magnitude baseline and by random scores, and distil each
student from the teacher with the same recipe. Side by side in one run; prints a table and a JSON line.

    OMP_NUM_THREADS=1 python benchmarks/pvt_v2_digits.py            # ~15 minutes on one busy CPU core
    OMP_NUM_THREADS=1 python benchmarks/pvt_v2_digits.py --quick    # a smoke run: fewer steps
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import PvtV2Config, PvtV2ForImageClassification

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.demo.data import TensorDictDataset, load_digit_splits
from upvit_hf.demo.recipe import TrainRecipe
from upvit_hf.demo.training import train
from upvit_hf.evaluation import evaluate_accuracy, model_stats


def teacher_config() -> PvtV2Config:
    return PvtV2Config(
        image_size=8, num_channels=1, num_encoder_blocks=2, depths=[2, 2], sr_ratios=[2, 1], hidden_sizes=[32, 64],
        patch_sizes=[3, 3], strides=[1, 2], num_attention_heads=[1, 2], mlp_ratios=[4, 4], num_labels=10,
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short training runs (a smoke run, not the numbers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of every width kept")
    parser.add_argument("--proxy-size", type=int, default=64, help="training images the KL scores sum over")
    args = parser.parse_args()
    teacher_steps, student_steps = (60, 20) if args.quick else (500, 150)

    torch.manual_seed(args.seed)
    splits = load_digit_splits()
    train_set = TensorDictDataset(pixel_values=splits.pixel_values(splits.train),
                                  labels=torch.tensor(splits.train["label"]))
    accuracy = lambda m: evaluate_accuracy(m, splits.test, splits.processor, top_k=(1,), batch_size=512,  # noqa: E731
                                           progress=False)["top1"]

    teacher = PvtV2ForImageClassification(teacher_config())
    train(teacher, train_set, TrainRecipe(steps=teacher_steps, batch_size=64, learning_rate=1e-3), args.seed)
    proxy = [{"pixel_values": train_set.columns["pixel_values"][i:i + 64]} for i in range(0, args.proxy_size, 64)]
    pruner = UPPruner(teacher)
    # the PVTv2-B2 -> B0 recipe: every stage keeps its heads and FFN ratio, its width scales by `ratio`
    stages = pruner.adapter.widths.stages
    hidden = [max(1, round(args.ratio * w.head_dim)) * w.num_attention_heads for w in stages]
    target = PruningTarget(hidden_size=tuple(hidden), num_attention_heads=tuple(w.num_attention_heads for w in stages),
                           intermediate_size=tuple(h * (w.intermediate_size // w.hidden_size) for h, w in zip(hidden, stages)))
    results = {"teacher": {"top1": accuracy(teacher), **model_stats(teacher)}}
    for method in ("kl", "magnitude", "random"):
        scores = pruner.score(proxy, method=method, seed=args.seed, show_progress=False)
        student = pruner.prune(target, scores)
        before = accuracy(student)
        train(student, train_set, TrainRecipe(steps=student_steps, batch_size=64, learning_rate=1e-3), args.seed,
              teacher=teacher)
        results[method] = {"top1_pruned": before, "top1_distilled": accuracy(student), **model_stats(student)}
    widths = {"teacher": pruner.adapter.widths.as_dict(), "pruned": UPPruner(student).adapter.widths.as_dict()}

    print(f"PVTv2 on digits: widths {widths['teacher']} -> {widths['pruned']}")
    print(f"teacher top-1 {results['teacher']['top1']:.4f}, {results['teacher']['params']:,} params")
    print("| scores | top-1 after pruning | top-1 after distillation | params |")
    print("|---|---:|---:|---:|")
    for method in ("kl", "magnitude", "random"):
        r = results[method]
        print(f"| {method} | {r['top1_pruned']:.4f} | {r['top1_distilled']:.4f} | {r['params']:,} |")
    print(json.dumps({"benchmark": "pvt_v2_digits", "seed": args.seed, "quick": args.quick,
                      "teacher_steps": teacher_steps, "student_steps": student_steps, "widths": widths,
                      "results": results}))


if __name__ == "__main__":
    main()
