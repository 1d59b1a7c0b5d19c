"""Peak memory (and time) of exact KL scoring at GPT-2-small size with 512-token proxy sequences.

GPT2LMHeadModel(GPT2Config()) has the real shape (124M parameters, vocabulary 50257) with random weights, so
nothing is downloaded. Scoring all 46,848 channels is hours of work on a CPU; this stops the scorer after
`--chunks` passes of `--variants-per-pass` channel removals. The first passes are the residual sweep, the
heaviest kind (all 24 branches run on the stacked variants, masked LayerNorms, a masked final norm in the
readout), so their peak bounds the whole run. Run it once per setting (peak RSS is per process):

    python benchmarks/gpt2_scoring_memory.py --batch-size 1 --variants-per-pass 16
    python benchmarks/gpt2_scoring_memory.py --batch-size 4 --variants-per-pass 4 --budget 0   # no slicing

`--budget 0` reads out whole variants only (all samples of a variant at once), to show what slicing a
variant's samples saves; on a CUDA device the peak of allocated GPU memory is reported as well.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import transformers.utils.logging as hf_logging
from transformers import GPT2Config, GPT2LMHeadModel

from upvit_hf import UPPruner
from upvit_hf.scoring import exact


class Stop(Exception):
    pass


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--variants-per-pass", type=int, default=16)
    p.add_argument("--chunks", type=int, default=2)
    p.add_argument("--budget", type=int, default=None, help="LOGITS_BUDGET override; 0 = whole variants only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval().to(args.device)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq_len), device=args.device)
    proxy = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]
    if args.budget is not None:
        exact.LOGITS_BUDGET = args.budget or args.batch_size * args.seq_len * model.config.vocab_size
    baseline = rss_gib()

    times: list[float] = []

    class Bar:  # stands in for the progress bar: times each pass and stops after --chunks of them
        def __init__(self, *a, **k):
            self.last = time.perf_counter()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            if args.device == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now
            if len(times) >= args.chunks:
                raise Stop

    hf_logging.tqdm = Bar
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        UPPruner(model).score(proxy, variants_per_pass=args.variants_per_pass)
    except Stop:
        pass
    result = {
        "device": args.device, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "variants_per_pass": args.variants_per_pass, "logits_budget": exact.LOGITS_BUDGET,
        "rss_after_model_gib": round(baseline, 2), "peak_rss_gib": round(rss_gib(), 2),
        "seconds_per_pass": [round(t, 2) for t in times], "total_seconds": round(time.perf_counter() - start, 1),
    }
    if args.device == "cuda":
        result["peak_cuda_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
