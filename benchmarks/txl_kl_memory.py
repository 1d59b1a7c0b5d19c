"""Peak memory of one distillation-loss step at Transformer-XL wt103 vocabulary scale: one-shot vs chunked loss.

The step is what grows with tokens × vocabulary: the student's adaptive-softmax readout (log-probabilities over
267,735 words, with its autograd graph), the teacher's log-probabilities (no graph), CE + KL over every predicted
token, and the backward pass to the student's readout parameters and hidden states. Heads have the real
``transfo-xl-wt103`` shapes (cutoffs 20k/40k/200k, div_val 4, d_embed 1024; teacher d_model 1024, student d_model
512 as after pruning), random init; the layers below the readout do not depend on the vocabulary and are left out.

Variants, each in a fresh process (peak resident memory from ``getrusage``, minus the resident memory just before
the step):

* ``readout``: student readout + backward of one log-probability (the floor any loss starts from);
* ``one_shot``: the loss as it was computed before chunking (selected rows copied, log-softmax of all of them,
  autograd keeping every intermediate);
* ``chunked``: `distillation_loss_parts` with its default budget (`LOSS_CHUNK_ELEMENTS`).

Run: ``OMP_NUM_THREADS=2 python benchmarks/txl_kl_memory.py --tokens 512``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F

WT103 = dict(vocab_size=267735, cutoffs=[20000, 40000, 200000], d_embed=1024, div_val=4, n_head=16, d_head=64,
             d_inner=4096, n_layer=18)
VARIANTS = ("readout", "one_shot", "chunked")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _one_shot_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss before chunking: rows selected by a boolean mask (copies), everything kept for autograd."""
    keep = labels[:, 1:] != -100
    s, t, y = student[:, :-1][keep].float(), teacher[:, :-1][keep].float(), labels[:, 1:][keep]
    ce = F.cross_entropy(s, y, reduction="sum")
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="sum", log_target=True)
    return ce + kl


def measure(variant: str, tokens: int) -> dict:
    from upvit_hf.distillation import distillation_loss_parts
    from upvit_hf.models.transfo_xl import TransfoXLConfig
    from upvit_hf.models.transfo_xl.modeling_transfo_xl import TransfoXLAdaptiveLogSoftmax

    torch.manual_seed(0)
    teacher_head = TransfoXLAdaptiveLogSoftmax(TransfoXLConfig(d_model=1024, **WT103)).requires_grad_(False)
    student_head = TransfoXLAdaptiveLogSoftmax(TransfoXLConfig(d_model=512, **WT103))
    for head in (teacher_head, student_head):
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.02)
    labels = torch.randint(0, WT103["vocab_size"], (1, tokens))
    with torch.no_grad():
        teacher_logits = teacher_head.log_prob(torch.randn(1, tokens, 1024))
    hidden = torch.randn(1, tokens, 512, requires_grad=True)

    before = _rss_mib()
    logits = student_head.log_prob(hidden)
    if variant == "readout":
        loss = -logits[0, 0, 0]
    elif variant == "one_shot":
        loss = _one_shot_loss(logits, teacher_logits, labels)
    else:
        parts = distillation_loss_parts(logits, teacher_logits, labels)
        loss = parts.ce_sum + parts.kl_sum
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    logits_mib = tokens * WT103["vocab_size"] * 4 / 2**20
    return {"variant": variant, "peak_step_mib": round(peak - before, 1), "logits_mib": round(logits_mib, 1),
            "loss": round(float(loss), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--variant", choices=VARIANTS, help="(internal) measure one variant in this process")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.tokens)))
        return
    results = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--tokens", str(args.tokens), "--variant", variant],
                             capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    readout = results["readout"]["peak_step_mib"]
    summary = {
        "benchmark": "txl_kl_memory",
        "tokens": args.tokens,
        "vocab_size": WT103["vocab_size"],
        "logits_mib": results["chunked"]["logits_mib"],
        **{f"peak_{v}_mib": results[v]["peak_step_mib"] for v in VARIANTS},
        "loss_one_shot_mib": round(results["one_shot"]["peak_step_mib"] - readout, 1),
        "loss_chunked_mib": round(results["chunked"]["peak_step_mib"] - readout, 1),
        "peak_ratio_one_shot_over_chunked": round(
            results["one_shot"]["peak_step_mib"] / results["chunked"]["peak_step_mib"], 2),
        "same_loss": abs(results["one_shot"]["loss"] - results["chunked"]["loss"]) < 1e-2 * abs(
            results["one_shot"]["loss"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
