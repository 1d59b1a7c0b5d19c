"""Causal-LM perplexity: strided sliding windows, and memory-carrying segments (Transformer-XL style).

Both count scored tokens exactly and sum the NLL from the logits themselves. The shortcut in the Hugging Face
guide (window loss × trg_len) is biased: a model's loss is the mean over trg_len − 1 shifted positions when
the window starts the text, and the first token of a window without overlap has no context inside it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils.logging import tqdm

from ..adapters import adapter_for
from ..model_io import IGNORE_INDEX, logits_of, model_device
from .complexity import max_positions
from .data import DEFAULT_TEXT_CONFIG, DEFAULT_TEXT_DATASET, load_text, text_documents
from .metrics import Perplexity



@dataclass(frozen=True)
class PerplexityResult:
    """Perplexity and the exact totals it came from."""

    perplexity: float
    mean_nll: float
    total_nll: float
    num_tokens: int
    num_windows: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) are fed; tokens [target_begin, end) are scored (each predicted from its left)."""

    begin: int
    end: int
    target_begin: int

    @property
    def num_targets(self) -> int:
        return self.end - self.target_begin


def sliding_windows(num_tokens: int, max_length: int, stride: int) -> list[Window]:
    """The windows of the strided method: each scores only tokens no earlier window scored.

    Window k starts at k·stride and ends at min(start + max_length, num_tokens); its targets are the last
    trg_len = end − previous_end tokens, except that position 0 of the text is never a target (nothing
    predicts it). Every token 1 … num_tokens−1 is scored exactly once when stride ≤ max_length.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")
    if num_tokens < 2:
        raise ValueError(f"Need at least 2 tokens to score, got {num_tokens}")
    windows = []
    prev_end = 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + max_length, num_tokens)
        windows.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == num_tokens:
            break
    return windows


def _summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed NLL (float64) and number of scored tokens of next-token prediction."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    return nll.double().sum(dim=1), (shift_labels != IGNORE_INDEX).sum(dim=1)


def _result(metric: Perplexity, num_windows: int) -> PerplexityResult:
    values = metric.compute()
    return PerplexityResult(
        perplexity=values["perplexity"],
        mean_nll=values["mean_nll"],
        total_nll=values["total_nll"],
        num_tokens=values["num_tokens"],
        num_windows=num_windows,
    )


def _as_1d(input_ids: torch.Tensor) -> torch.Tensor:
    if input_ids.dim() == 2 and input_ids.shape[0] == 1:
        input_ids = input_ids[0]
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must be one token stream (1-D or [1, n]), got shape {tuple(input_ids.shape)}")
    return input_ids.long()


def sliding_window_perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    max_length: int,
    stride: int,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of one token stream with the strided sliding-window method (see `sliding_windows`)."""
    ids = _as_1d(input_ids)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    windows = sliding_windows(len(ids), max_length, stride)
    device = torch.device(device) if device is not None else model_device(model)
    metric = Perplexity()
    # Windows of equal length can share a batch; only the last one is usually shorter.
    batches: list[list[Window]] = []
    for window in windows:
        same = batches and len(batches[-1]) < batch_size
        if same and (batches[-1][0].end - batches[-1][0].begin) == (window.end - window.begin):
            batches[-1].append(window)
        else:
            batches.append([window])
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(windows), desc="perplexity", disable=not progress) as bar:
            for batch in batches:
                inputs = torch.stack([ids[w.begin : w.end] for w in batch])
                labels = inputs.clone()
                for row, w in enumerate(batch):
                    labels[row, : w.target_begin - w.begin] = IGNORE_INDEX
                logits = model(input_ids=inputs.to(device)).logits
                nll, count = _summed_nll(logits, labels.to(logits.device))
                metric.add_batch(nll=nll.tolist(), num_tokens=count.tolist())
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return _result(metric, len(windows))


def mems_perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    tgt_len: int,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of one token stream read in order in segments of `tgt_len`, feeding back the model's `mems`.

    The segmentation of Transformer-XL's evaluation (4.x ``LMOrderedIterator``, batch 1): segment k feeds tokens
    [k·tgt_len, k·tgt_len + L) and predicts tokens [k·tgt_len + 1, k·tgt_len + L + 1), L = min(tgt_len, rest), so
    every token after the first is predicted exactly once, with all earlier text reachable through the memories.
    """
    ids = _as_1d(input_ids)
    if tgt_len < 1:
        raise ValueError(f"tgt_len must be positive, got {tgt_len}")
    if len(ids) < 2:
        raise ValueError(f"Need at least 2 tokens to score, got {len(ids)}")
    device = torch.device(device) if device is not None else model_device(model)
    metric = Perplexity()
    starts = range(0, len(ids) - 1, tgt_len)
    mems: Any = None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(starts), desc="perplexity", disable=not progress) as bar:
            for begin in starts:
                end = min(begin + tgt_len, len(ids) - 1)
                inputs = ids[begin:end].unsqueeze(0).to(device)
                output = model(input_ids=inputs, **({} if mems is None else {"mems": mems}))
                logits = logits_of(output)
                if logits is None:
                    raise ValueError("the model output has no per-position logits")
                targets = ids[begin + 1 : end + 1].to(logits.device)
                nll = F.cross_entropy(logits[0].float(), targets, reduction="sum")
                metric.add(nll=float(nll), num_tokens=len(targets))
                mems = output.get("mems") if hasattr(output, "get") else getattr(output, "mems", None)
                bar.update(1)
    finally:
        model.train(was_training)
    return _result(metric, len(starts))


def line_stream(tokenizer: Any, text: str) -> torch.Tensor:
    """The WikiText-103 token stream: every line's tokens followed by the end-of-sequence token, in order.

    That is how Transformer-XL's published numbers were computed (each line of ``wiki.test.tokens``, blank ones
    included, contributes its whitespace tokens and ``<eos>``).
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no end-of-sequence token, which the line-stream protocol appends")
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line does not start another
        lines.pop()
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"] if lines else []
    return torch.tensor([i for row in ids for i in (*row, tokenizer.eos_token_id)], dtype=torch.long)


def evaluate_perplexity(
    model: nn.Module,
    tokenizer: Any,
    data: str | os.PathLike = DEFAULT_TEXT_DATASET,
    *,
    config_name: str | None = DEFAULT_TEXT_CONFIG,
    split: str = "test",
    text_column: str = "text",
    max_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    tgt_len: int = 128,
    mem_len: int = 1600,
    clamp_len: int = 1000,
    same_length: bool = True,
    max_tokens: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of a causal LM on WikiText (or a local text file / saved dataset).

    Models that carry memories (``adapter_for(model).uses_memory``) follow the WikiText-103 protocol of
    Transformer-XL's published numbers: each row (line) gives its tokens plus end-of-sequence (`line_stream`),
    one stream read in segments of `tgt_len` with memories of `mem_len` (`mems_perplexity`), relative distances
    clamped at `clamp_len`, every query seeing the same number of keys (`same_length`). Others read the documents
    joined by "\\n\\n" with sliding windows (`max_length` defaults to the model's maximum positions, `stride` to
    half of it, as in the Hugging Face guide for GPT-2).
    """
    adapter = adapter_for(model)
    if adapter.uses_memory:
        rows = text_documents(data, config_name, split, text_column=text_column)  # in order: lines or rows
        ids = line_stream(tokenizer, "".join(row if row.endswith("\n") else row + "\n" for row in rows))
        ids = ids if max_tokens is None else ids[:max_tokens]
        with adapter.memory_settings(mem_len=mem_len, clamp_len=clamp_len, same_length=same_length):
            return mems_perplexity(model, ids, tgt_len=tgt_len, device=device, progress=progress)
    text = load_text(data, config_name, split, text_column=text_column)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    max_length = max_length or max_positions(model)
    if max_length is None:
        raise ValueError("The model config has no maximum length; pass max_length=...")
    stride = stride or max(1, max_length // 2)
    return sliding_window_perplexity(
        model, ids, max_length=max_length, stride=stride, batch_size=batch_size, device=device, progress=progress
    )
