"""Scoring at scale from the command line: processes and devices, checkpoints, dtype, TF32."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..scoring.proxy_pass import AUTO
from .common import path_arg, positive_int

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def variants_argument(value: str) -> int | str:
    """argparse type of --variants-per-pass: a positive integer or "auto"."""
    if value == AUTO:
        return value
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value!r}") from None


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "scoring at scale (several processes: accelerate launch --num_processes N -m upvit_hf.cli ...)")
    group.add_argument("--variants-per-pass", type=variants_argument, default=AUTO,
                       help="channel removals evaluated per forward pass; bounds memory (default auto: from free "
                            "GPU memory, 16 on a CPU)")
    group.add_argument("--checkpoint", type=path_arg, default=None,
                       help="file for the running sums: a rerun with the same arguments resumes from it "
                            "(one file per process, suffixed .rankR-of-N)")
    group.add_argument("--checkpoint-every", type=positive_int, default=10,
                       help="proxy batches between checkpoint saves (default 10)")
    group.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                       help="run the network in this dtype while scoring (default: float32, float64 for a float64 "
                            "model; bfloat16/float16 trade score accuracy for speed)")
    group.add_argument("--allow-tf32", action="store_true",
                       help="allow TF32 matmuls on CUDA while scoring (off by default: scores then match float32)")


def scale_options(args: argparse.Namespace) -> dict[str, Any]:
    """The proxy-pass options the user gave (only those: baselines refuse any)."""
    options: dict[str, Any] = {}
    if args.checkpoint is not None:
        options.update(checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every)
    if args.dtype is not None:
        options["dtype"] = DTYPES[args.dtype]
    if args.allow_tf32:
        options["allow_tf32"] = True
    return options


@dataclass(frozen=True)
class ScoringProcess:
    device: torch.device
    is_main_process: bool


@contextmanager
def scoring_processes() -> Iterator[ScoringProcess]:
    """This process's device and whether it writes the outputs. Under accelerate launch / torchrun
    (WORLD_SIZE > 1) it joins the process group first: NCCL with one GPU per local rank, gloo on CPUs, and
    leaves it at the end if it joined here. (accelerate's PartialState does not set up the group for CPU
    processes launched by torchrun, so the group is joined through torch.distributed directly.)"""
    distributed = torch.distributed.is_available()
    joined_here = distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if joined_here:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if distributed and torch.distributed.is_initialized() else 0
    try:
        yield ScoringProcess(device, rank == 0)
    finally:
        if joined_here:
            torch.distributed.destroy_process_group()
