"""Exact KL scoring at real model sizes on one device: throughput, projected time for 2000 samples on 1 and
8 devices, next to the authors' procedure (a full forward pass per channel, with the teacher re-run).

Models, random weights (nothing is downloaded), weights drawn with std 1/sqrt(fan_in) and LayerNorm
weights around 1 so that outputs depend visibly on every channel:

* DeiT-B: DeiTForImageClassificationWithTeacher, 768 wide, 12 heads, 12 layers, FFN 3072, 224 px (46,848 channels);
* GPT-2 small: GPT2LMHeadModel(GPT2Config()), vocabulary 50257, `--seq-len` tokens per sequence (46,848 channels).

For each model: `UPPruner.score` over `--samples` proxy samples scores every channel (float32, TF32 off,
variants_per_pass="auto"); throughput = channels × samples / s. The authors' procedure is measured on
`--naive-channels` channels spread over all components and layers: zero the channel's weights, run the
teacher and the zeroed model over `--naive-batch` samples, KL in float64, restore. Projections assume data
parallelism scales linearly (each process scores its shard; one all-reduce at the end). For DeiT-B the same
samples are also scored with TF32 allowed and in bfloat16, and their agreement with the float32 scores is
reported. Any run longer than `--budget-s` stops early and is reported as partial (its throughput is then
pessimistic: the residual sweep and the first layers, the longest suffixes, come first).

    python benchmarks/gpu_scoring.py                 # on one GPU: about 2-4 minutes on an H100
    OMP_NUM_THREADS=2 python benchmarks/gpu_scoring.py --quick   # small shapes on a CPU, under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import transformers.utils.logging as hf_logging
from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, GPT2Config, GPT2LMHeadModel

from upvit_hf import UPPruner
from upvit_hf.adapters import adapter_for

PROJECT_SAMPLES = 2000


class Stop(Exception):
    pass


def build(kind: str, quick: bool, seq_len: int) -> tuple[torch.nn.Module, str]:
    if kind == "deit-b":
        shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                     image_size=16, patch_size=4) if quick else dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            image_size=224, patch_size=16)
        model = DeiTForImageClassificationWithTeacher(DeiTConfig(num_labels=1000, **shape))
    else:
        shape = dict(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128, bos_token_id=0,
                     eos_token_id=0) if quick else {}
        model = GPT2LMHeadModel(GPT2Config(**shape))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                is_norm_weight = name.endswith("weight")
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=generator) if is_norm_weight
                        else 0.02 * torch.randn(p.shape, generator=generator))
            else:
                fan_in = p.shape[0] if "c_" in name else p[0].numel()  # GPT-2 Conv1D weights are [in, out]
                p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(fan_in))
    c = model.config
    label = (f"{type(model).__name__} D={c.hidden_size} L={c.num_hidden_layers} H={c.num_attention_heads} "
             f"I={getattr(c, 'intermediate_size', None) or getattr(c, 'n_inner', None) or 4 * c.hidden_size}")
    if kind != "deit-b":
        label += f" vocab={c.vocab_size} seq={seq_len}"
    return model.eval(), label


def proxy(model: torch.nn.Module, samples: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    c = model.config
    if "pixel_values" in adapter_for(model).required_inputs:
        x = torch.randn(samples, c.num_channels, c.image_size, c.image_size, generator=generator)
        return {"pixel_values": x.to(model.device)}
    ids = torch.randint(0, c.vocab_size, (samples, seq_len), generator=generator).to(model.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def exact_run(model, batch, budget_s: float, **options) -> dict:
    """Score every channel (or stop after budget_s); channels done, seconds, scores (None when partial)."""
    device = model.device
    done = {"channels": 0}

    class Bar:  # stands in for the progress bar: counts the scored channels, stops at the time budget
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            done["channels"] += n
            sync(device)
            if time.perf_counter() - start > budget_s:
                raise Stop

    real_bar, hf_logging.tqdm = hf_logging.tqdm, Bar
    pruner = UPPruner(model)
    sync(device)
    start = time.perf_counter()
    scores = None
    try:
        scores = pruner.score([batch], variants_per_pass="auto", **options)
    except Stop:
        pass
    finally:
        hf_logging.tqdm = real_bar
    seconds = time.perf_counter() - start
    flat = None if scores is None else torch.cat([scores.residual, *scores.attention, *scores.ffn])
    return {"channels": done["channels"], "seconds": seconds, "scores": flat}


def authors_procedure(model, batch, channels: int, seed: int) -> dict:
    """Per channel: zero its weights, run the teacher and the zeroed model over the batch, float64 KL."""
    adapter = adapter_for(model)
    w = adapter.widths
    state = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    components = []
    for i in range(channels):  # spread over residual / attention / FFN and over the layers
        layer = int(torch.randint(w.num_hidden_layers, (1,), generator=generator))
        kind = i % 3
        if kind == 0:
            components.append((adapter.residual_slices(), int(torch.randint(w.hidden_size, (1,), generator=generator))))
        elif kind == 1:
            components.append((adapter.attention_slices(layer),
                               int(torch.randint(w.attention_width, (1,), generator=generator))))
        else:
            components.append((adapter.ffn_slices(layer), int(torch.randint(w.intermediate_size, (1,), generator=generator))))
    device = model.device
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for slices, channel in components:
            saved = []
            for s in slices:
                tensor = state[s.name]
                index = torch.tensor([o + channel for o in s.offsets], device=tensor.device)
                saved.append((tensor, s.axis, index, tensor.index_select(s.axis, index)))
                tensor.index_fill_(s.axis, index, 0.0)
            p = torch.log_softmax(model(**batch).logits.double(), -1)
            for tensor, axis, index, values in saved:
                tensor.index_copy_(axis, index, values)
            q = torch.log_softmax(model(**batch).logits.double(), -1)  # the authors re-run the teacher
            float(torch.nn.functional.kl_div(p, q, log_target=True, reduction="sum"))
    sync(device)
    return {"channels": channels, "seconds": time.perf_counter() - start}


def agreement(reference: torch.Tensor, other: torch.Tensor) -> dict:
    significant = reference > 1e-6 * reference.max()
    rel = ((other - reference).abs() / reference.abs().clamp_min(1e-300))[significant]
    return {"max_rel_diff": float(rel.max()), "median_rel_diff": float(rel.median())}


def hours(channels: int, throughput: float, gpus: int) -> float:
    return channels * PROJECT_SAMPLES / throughput / gpus / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes (a CPU check of the script)")
    parser.add_argument("--models", default="deit-b,gpt2", help="comma-separated: deit-b, gpt2")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=None, help="proxy samples scored exactly (default 2)")
    parser.add_argument("--seq-len", type=int, default=None, help="GPT-2 tokens per sequence (default 128; quick 32)")
    parser.add_argument("--naive-channels", type=int, default=12, help="channels timed with the authors' procedure")
    parser.add_argument("--naive-batch", type=int, default=None, help="samples per full pass there (default 64; quick 8)")
    parser.add_argument("--budget-s", type=float, default=75.0, help="stop a scoring run after this many seconds")
    parser.add_argument("--no-precision", action="store_true", help="skip the TF32 / bfloat16 comparison runs")
    args = parser.parse_args()
    samples = args.samples or 2
    seq_len = args.seq_len or (32 if args.quick else 128)
    naive_batch = args.naive_batch or (8 if args.quick else 64)
    device = torch.device(args.device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"

    for kind in args.models.split(","):
        model, label = build(kind, args.quick, seq_len)
        model.to(device)
        widths = adapter_for(model).widths
        total = widths.hidden_size + widths.num_hidden_layers * (widths.attention_width + widths.intermediate_size)
        batch = proxy(model, samples, seq_len, seed=1)
        naive_batch_inputs = proxy(model, naive_batch, seq_len, seed=2)
        with torch.inference_mode():  # warm-up: kernels, allocator, thread pools
            model(**batch), model(**naive_batch_inputs)
        exact_run(model, batch, 0.0)  # and the scorer's first stacked pass
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        exact = exact_run(model, batch, args.budget_s)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        naive = authors_procedure(model, naive_batch_inputs, args.naive_channels, seed=0)
        exact_tp = exact["channels"] * samples / exact["seconds"]
        naive_tp = naive["channels"] * naive_batch / naive["seconds"]
        result = {
            "model": label, "device": card, "channels": total, "samples": samples,
            "exact": {"channels_scored": exact["channels"], "seconds": round(exact["seconds"], 2),
                      "partial": exact["scores"] is None, "channel_samples_per_s": round(exact_tp, 1),
                      "peak_gib": None if peak is None else round(peak, 2)},
            "authors": {"channels_timed": naive["channels"], "batch": naive_batch, "seconds": round(naive["seconds"], 2),
                        "channel_samples_per_s": round(naive_tp, 1)},
            "speedup": round(exact_tp / naive_tp, 2),
            f"projected_hours_{PROJECT_SAMPLES}_samples": {
                "exact_1_device": round(hours(total, exact_tp, 1), 2),
                "exact_8_devices": round(hours(total, exact_tp, 8), 2),
                "authors_1_device": round(hours(total, naive_tp, 1), 2),
                "authors_8_devices": round(hours(total, naive_tp, 8), 2)},
        }
        if kind == "deit-b" and not args.no_precision and exact["scores"] is not None:
            for name, options in (("tf32", {"allow_tf32": True}), ("bfloat16", {"dtype": torch.bfloat16})):
                run = exact_run(model, batch, args.budget_s, **options)
                entry = {"seconds": round(run["seconds"], 2), "partial": run["scores"] is None,
                         "speedup_vs_float32": round(exact["seconds"] / run["seconds"] *
                                                     run["channels"] / exact["channels"], 2)}
                if run["scores"] is not None:
                    entry.update(agreement(exact["scores"], run["scores"]))
                result[name] = entry
        print(f"{label} on {card}: exact {exact_tp:,.0f} channel·samples/s, authors' procedure {naive_tp:,.0f} "
              f"({result['speedup']}x); {PROJECT_SAMPLES} samples: {result[f'projected_hours_{PROJECT_SAMPLES}_samples']}")
        print(json.dumps(result), flush=True)
        model.cpu()
        del model


if __name__ == "__main__":
    main()
