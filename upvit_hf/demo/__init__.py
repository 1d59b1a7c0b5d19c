"""`run_demo`: UP-ViTs end to end on embedded data, offline, in minutes on a CPU.

A small ViT is trained on scikit-learn's 8×8 digits and a small GPT-2 on Penn Treebank; each is pruned to
several widths by every criterion (UP's exact KL on a proxy subset of its training data, magnitude, random),
distilled from its unpruned self, and compared, before and during fine-tuning, with the same architectures
trained from scratch with the same recipe. Everything lands in one folder: `results.json`, `results.md`,
`figure.png` (accuracy vs throughput across widths, and vs fine-tuning steps) and the UP-pruned models.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.utils import logging

from .language import run_language
from .recipe import check_recipe, language_recipe, vision_recipe
from .report import markdown_report, write_figure, write_results, write_text
from .system import default_threads, keep_freed_memory
from .vision import run_vision

logger = logging.get_logger("upvit_hf.demo")

__all__ = ["default_threads", "run_demo"]


def run_demo(
    output_dir: str | os.PathLike,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    *,
    language_seeds: Sequence[int] | None = None,
    num_threads: int | None = None,
    show_progress: bool = True,
    print_tables: bool = True,
) -> dict[str, Any]:
    """Run both halves of the demo, write `results.json`, `results.md`, `figure.png` and the saved models
    into `output_dir`, print the tables, and return the results.

    `quick=True` shrinks every budget (few seeds, a few steps, a short test prefix for perplexity): it checks
    the pipeline, its numbers mean little. `seeds` and `language_seeds` override each half's seeds.
    `num_threads` defaults to `default_threads()`.
    """
    num_threads = default_threads() if num_threads is None else num_threads
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    vision = vision_recipe(quick)
    language = language_recipe(quick)
    if seeds is not None:
        vision = dataclasses.replace(vision, seeds=tuple(int(s) for s in seeds))
    if language_seeds is not None:
        language = dataclasses.replace(language, seeds=tuple(int(s) for s in language_seeds))
    check_recipe(vision)
    check_recipe(language)

    allocator_tuned = keep_freed_memory()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    start = time.perf_counter()
    try:
        results: dict[str, Any] = {
            "quick": quick,
            "environment": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "torch_threads": num_threads,
                "malloc_keeps_freed_memory": allocator_tuned,
            },
            "vision": run_vision(out, vision, show_progress),
            "language": run_language(out, language, show_progress),
        }
    finally:
        torch.set_num_threads(previous_threads)
    results["seconds"] = time.perf_counter() - start

    report = markdown_report(results)
    write_results(results, out / "results.json")
    write_text(report, out / "results.md")
    write_figure(results, out / "figure.png")
    logger.info("demo finished in %.0fs; results in %s", results["seconds"], out)
    if print_tables:
        print(report)
    return results
