"""What the scoring dtype costs: KL scores of a *trained* ViT computed in float32 (the policy), and in
bfloat16 / float16 (explicit opt-ins), against float64 scores of the same weights.

The model is the demo's digits teacher (ViT 64 wide, 4 layers, 4 heads, FFN 128 on scikit-learn's 8×8
digits), trained with the demo's recipe and seed. It is then stored in bfloat16, as a bf16 checkpoint would
load under transformers 5; every run scores the same bf16-rounded weights on the same proxy images, so
the differences are the arithmetic's alone. Reported per dtype: max and median relative error over all
channels, and how many of the 8 most and 8 least important residual channels agree with float64's.

    python benchmarks/dtype_scoring.py            # ~5 minutes on 2 idle CPU cores (bf16/fp16 are slow on CPUs)
    python benchmarks/dtype_scoring.py --quick    # shorter training
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from transformers import ViTForImageClassification

from upvit_hf import UPPruner
from upvit_hf.demo.data import TensorDictDataset, load_digit_splits
from upvit_hf.demo.recipe import vision_recipe
from upvit_hf.demo.training import train
from upvit_hf.demo.vision import accuracy, teacher_config
from upvit_hf.proxy import image_proxy


def flat(scores) -> torch.Tensor:
    return torch.cat([scores.residual, *scores.attention, *scores.ffn])


def overlap(a: torch.Tensor, b: torch.Tensor, k: int, largest: bool) -> int:
    return len(set(a.topk(k, largest=largest).indices.tolist()) & set(b.topk(k, largest=largest).indices.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy-size", type=int, default=32)
    args = parser.parse_args()

    recipe = vision_recipe(args.quick)
    splits = load_digit_splits()
    train_set = TensorDictDataset(pixel_values=splits.pixel_values(splits.train),
                                  labels=torch.tensor(splits.train["label"]))
    torch.manual_seed(args.seed)
    model = ViTForImageClassification(teacher_config(recipe))
    trained = train(model, train_set, recipe.teacher, args.seed)
    print(f"teacher trained: {trained.steps} steps in {trained.seconds:.0f} s", flush=True)
    model = model.to(torch.bfloat16).eval()  # as a bf16 checkpoint loads
    proxy = image_proxy(splits.train, splits.processor, size=args.proxy_size, seed=args.seed, num_channels=1,
                        batch_size=64)

    reference = flat(UPPruner(copy.deepcopy(model).double()).score(proxy, show_progress=False))
    result = {"model": "ViT digits teacher (demo recipe), weights stored in bfloat16", "seed": args.seed,
              "teacher_steps": recipe.teacher.steps, "test_top1": accuracy(copy.deepcopy(model).float(), splits),
              "proxy_images": args.proxy_size}
    for name, dtype in (("float32 (policy)", None), ("bfloat16 (opt-in)", torch.bfloat16),
                        ("float16 (opt-in)", torch.float16)):
        start = time.perf_counter()
        scores = UPPruner(model).score(proxy, show_progress=False, dtype=dtype)
        seconds = time.perf_counter() - start
        got = flat(scores)
        rel = (got - reference).abs() / reference.abs()
        width = scores.residual.numel()
        result[name] = {
            "max_rel_err": float(rel.max()), "median_rel_err": float(rel.median()),
            "top8_residual_agree": overlap(scores.residual.double(), reference[:width], 8, True),
            "bottom8_residual_agree": overlap(scores.residual.double(), reference[:width], 8, False),
            "seconds": round(seconds, 2),
        }
        print(f"{name:18s} max rel err {rel.max():.2e}, median {rel.median():.2e}, top-8 residual "
              f"{result[name]['top8_residual_agree']}/8, bottom-8 {result[name]['bottom8_residual_agree']}/8", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
