"""Fast exact KL scoring vs naive leave-one-out, side by side on one model and proxy set.

Naive: for every channel, a copy of the model with that channel physically removed (residual and FFN
channels sliced out; attention dims zeroed in q/k/v and the output projection, which is what removal means
inside a head), then a full forward pass over the proxy set. Fast: `UPPruner.score` (masked variants stacked along the batch,
suffix-only evaluation from cached branch inputs). Prints both times, the ratio, the agreement of the
scores, the projected cost of scoring ViT-Base on 2000 images, and a JSON line.

    python benchmarks/bench_scoring.py                    # 6-layer ViT; a few minutes on 2 CPU cores
    python benchmarks/bench_scoring.py --family gpt2      # 6-layer GPT-2, 32-token sequences
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification
from transformers.pytorch_utils import Conv1D

from upvit_hf import UPPruner
from upvit_hf.adapters import Widths, adapter_for


def build_model(args):
    if args.family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=args.hidden, n_layer=args.layers, n_head=args.heads,
                                           n_inner=args.intermediate, vocab_size=1000, n_positions=64))
    else:
        model = ViTForImageClassification(ViTConfig(
            hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
            intermediate_size=args.intermediate, image_size=32, patch_size=8, num_labels=10))
    torch.manual_seed(0)
    with torch.no_grad():  # trained-looking weights: outputs that depend on every channel
        for name, p in model.named_parameters():
            is_norm = ("norm" in name or ".ln_" in name) and name.endswith("weight")
            p.copy_(1 + 0.3 * torch.randn_like(p) if is_norm else 0.1 * torch.randn_like(p))
    return model.eval()


def build_proxy(args, generator) -> list[dict[str, torch.Tensor]]:
    if args.family == "gpt2":
        inputs = torch.randint(0, 1000, (args.samples, args.seq_len), generator=generator)
        return [{"input_ids": chunk} for chunk in inputs.split(args.batch_size)]
    images = torch.randn(args.samples, 3, 32, 32, generator=generator)
    return [{"pixel_values": chunk} for chunk in images.split(args.batch_size)]


class NaiveScorer:
    """Leave-one-out with one reduced model copy per channel and a full forward each."""

    def __init__(self, model, batches):
        self.model, self.batches = model, batches
        self.adapter = adapter_for(model)
        with torch.inference_mode():
            self.reference = [torch.log_softmax(model(**b).logits.double(), -1) for b in batches]
        self.forward_seconds = 0.0

    def kl(self, reduced) -> float:
        start = time.perf_counter()
        total = 0.0
        with torch.inference_mode():
            for batch, q in zip(self.batches, self.reference):
                p = torch.log_softmax(reduced(**batch).logits.double(), -1)
                total += float((q.exp() * (q - p)).sum())
        self.forward_seconds += time.perf_counter() - start
        return total

    def without(self, slices, channel: int, zero: bool = False):
        reduced = copy.deepcopy(self.model)
        params = dict(reduced.named_parameters(remove_duplicate=False))
        done = set()
        for s in slices:
            p = params[s.name]
            if (id(p), s.axis) in done:  # a tied parameter listed under each of its names
                continue
            done.add((id(p), s.axis))
            drop = torch.tensor([o + channel for o in s.offsets])
            if zero:
                p.data.index_fill_(s.axis, drop, 0.0)
            else:
                keep = torch.tensor([i for i in range(p.shape[s.axis]) if i not in set(drop.tolist())])
                p.data = p.data.index_select(s.axis, keep)
        for module in reduced.modules():  # the shape attributes forward() reads
            if isinstance(module, nn.LayerNorm):
                module.normalized_shape = tuple(module.weight.shape)
            elif isinstance(module, Conv1D):
                module.nf = module.weight.shape[1]
        return reduced

    def score(self, widths: Widths):
        a = self.adapter
        residual = [self.kl(self.without(a.residual_slices(), c)) for c in range(widths.hidden_size)]
        attention, ffn = [], []
        for layer in range(widths.num_hidden_layers):
            dims = a.attention_slices(layer)
            attention.append([self.kl(self.without(dims, i, zero=True)) for i in range(widths.attention_width)])
            ffn.append([self.kl(self.without(a.ffn_slices(layer), j)) for j in range(widths.intermediate_size)])
        return torch.tensor(residual), [torch.tensor(x) for x in attention], [torch.tensor(x) for x in ffn]


def forward_equivalents(w: Widths) -> tuple[float, float]:
    """Full forward passes per proxy sample: naive vs ours (ours runs only the suffix after a cached branch)."""
    branches = 2 * w.num_hidden_layers
    naive = w.hidden_size + w.num_hidden_layers * (w.attention_width + w.intermediate_size)
    ours = w.hidden_size + sum(
        (w.attention_width * (branches - 2 * l) + w.intermediate_size * (branches - 2 * l - 1)) / branches
        for l in range(w.num_hidden_layers)
    )
    return naive, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("vit", "gpt2"), default="vit")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=192)
    parser.add_argument("--samples", type=int, default=16, help="proxy images or sequences")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per proxy sequence (gpt2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variants-per-pass", type=int, default=32)
    args = parser.parse_args()

    model = build_model(args)
    widths = adapter_for(model).widths
    batches = build_proxy(args, torch.Generator().manual_seed(1))

    start = time.perf_counter()
    fast = UPPruner(model).score(batches, variants_per_pass=args.variants_per_pass, show_progress=False)
    fast_seconds = time.perf_counter() - start

    naive = NaiveScorer(model, batches)
    start = time.perf_counter()
    residual, attention, ffn = naive.score(widths)
    naive_seconds = time.perf_counter() - start

    ours = torch.cat([fast.residual, *fast.attention, *fast.ffn])
    theirs = torch.cat([residual, *attention, *ffn]).double()
    significant = theirs > 1e-6 * theirs.max()
    rel = ((ours - theirs).abs() / theirs.abs().clamp_min(1e-300))[significant]
    naive_fw, ours_fw = forward_equivalents(widths)
    base = Widths(768, 12, 64, 3072, 12)
    base_naive, base_ours = forward_equivalents(base)

    result = {
        "model": f"{type(model).__name__} L={widths.num_hidden_layers} D={widths.hidden_size} H={widths.num_attention_heads} "
                 f"I={widths.intermediate_size}",
        "channels": int(theirs.numel()),
        "samples": args.samples,
        "fast_s": round(fast_seconds, 2),
        "naive_s": round(naive_seconds, 2),
        "naive_forward_only_s": round(naive.forward_seconds, 2),
        "speedup": round(naive_seconds / fast_seconds, 2),
        "speedup_vs_naive_forward_only": round(naive.forward_seconds / fast_seconds, 2),
        "max_rel_diff": float(rel.max()),
        "median_rel_diff": float(rel.median()),
        "forward_equivalents_per_image": {"naive": naive_fw, "ours": round(ours_fw, 1)},
        "vit_base_2000_images_forward_passes": {"naive": int(base_naive * 2000), "ours": int(base_ours * 2000)},
    }
    print(f"scored {result['channels']} channels of {result['model']} on {args.samples} proxy samples")
    print(f"  fast exact scorer : {fast_seconds:8.2f} s")
    print(f"  naive leave-one-out: {naive_seconds:8.2f} s  (forward passes alone {naive.forward_seconds:.2f} s)")
    print(f"  speed ratio        : {result['speedup']:.2f}x  ({result['speedup_vs_naive_forward_only']:.2f}x vs naive "
          "forward passes alone)")
    print(f"  agreement          : max relative difference {result['max_rel_diff']:.2e} "
          f"(median {result['median_rel_diff']:.2e}) over {int(significant.sum())} channels")
    print(f"  ViT-Base, 2000 images: {base_naive * 2000:,.0f} full forward passes naive vs "
          f"{base_ours * 2000:,.0f} ours ({base_naive / base_ours:.2f}x fewer), before batching gains")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
