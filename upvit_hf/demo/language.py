"""Language half of the demo: a small GPT-2 on word-level Penn Treebank, UP-pruned to two widths.

Same protocol as the vision half (see `protocol`), with fewer seeds (a language run costs several vision
runs). KL scores are summed over every token of a proxy set of training windows. Perplexity is on a fixed
prefix of the Penn Treebank test split, in windows of `block_size` tokens (`eval_stride` apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from ..adapters import adapter_for
from ..evaluation import sliding_window_perplexity
from ..proxy import text_proxy
from .data import TreebankSplits, lm_blocks, load_treebank
from .export import save_and_reload
from .measure import measure_cost
from .progress import Stages
from .protocol import stage_count, sweep
from .recipe import LanguageRecipe, as_dict, check_recipe
from .rows import summarize, target_entries


def teacher_config(recipe: LanguageRecipe, data: TreebankSplits) -> GPT2Config:
    eos = data.tokenizer.eos_token_id
    return GPT2Config(
        vocab_size=len(data.tokenizer), n_positions=recipe.block_size, n_embd=recipe.n_embd,
        n_layer=recipe.n_layer, n_head=recipe.n_head, n_inner=recipe.n_inner,
        resid_pdrop=recipe.dropout, embd_pdrop=recipe.dropout, attn_pdrop=recipe.dropout,
        bos_token_id=eos, eos_token_id=eos,  # no pad id: blocks are never padded, and <eos> is real text
    )


def perplexity(model: GPT2LMHeadModel, test: torch.Tensor, recipe: LanguageRecipe) -> float:
    return sliding_window_perplexity(model, test, max_length=recipe.block_size, stride=recipe.eval_stride,
                                     batch_size=32, progress=False).perplexity


def run_language(output_dir: Path, recipe: LanguageRecipe, show_progress: bool = True) -> dict[str, Any]:
    """Run the sweep, measure every architecture, save and reload the teacher and the UP students."""
    check_recipe(recipe)
    stages = Stages("language (GPT-2 on Penn Treebank)", stage_count(recipe) + 2, show_progress)
    data = load_treebank()
    test = data.test if recipe.max_test_tokens is None else data.test[: recipe.max_test_tokens]
    result = sweep(
        lambda: GPT2LMHeadModel(teacher_config(recipe, data)),
        lm_blocks(data.train, recipe.block_size),
        lambda seed: text_proxy(data.train, size=recipe.proxy_sequences, seq_len=recipe.proxy_length, seed=seed,
                                batch_size=recipe.proxy_sequences),
        lambda model: perplexity(model, test, recipe),
        recipe, stages, variants_per_pass=16,
    )
    models = {"teacher": result.teacher, **result.students}
    with stages("measure params / FLOPs / throughput"):
        costs = {name: measure_cost(model, batch_size=recipe.throughput_batch, seq_len=recipe.block_size)
                 for name, model in models.items()}
    with stages("save + reload"):
        root = Path(output_dir)
        sample = data.tokenizer.decode(data.test[: recipe.block_size])

        def tokens(tokenizer: Any) -> dict[str, torch.Tensor]:
            return {"input_ids": tokenizer(sample, return_tensors="pt", add_special_tokens=False)["input_ids"]}

        saved = {
            name: save_and_reload(model, data.tokenizer, root / "language" / f"{name}-gpt2-ptb",
                                  AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained, tokens, root)
            for name, model in models.items()
        }
    stages.close()
    return {
        "task": "Penn Treebank word-level language modelling (treebank package, 10k-word vocabulary)",
        "metric": "perplexity",
        "higher_is_better": False,
        "setup": {
            "recipe": as_dict(recipe),
            "train_tokens": len(data.train),
            "test_tokens_scored": len(test) - 1,
            "test_tokens_total": len(data.test),
            "vocab_size": len(data.tokenizer),
            "teacher_widths": adapter_for(result.teacher).widths.as_dict(),
            "flops_per": f"sequence of {recipe.block_size} tokens",
            "scratch_recipe": "same architecture, random init, same steps and CE + alpha*T^2*KL loss as the "
                              "pruned students",
        },
        "teacher": {**costs["teacher"].to_dict(), "perplexity": summarize([result.teacher_metric]),
                    "training": result.teacher_run},
        "targets": target_entries(result, recipe, costs, higher_is_better=False),
        "saved_models": saved,
        "stage_seconds": stages.seconds,
    }
