"""Evaluation: accuracy, perplexity (strided and with memories), throughput, parameter and FLOP counts.

Every number is checked against an independent computation written here, or against a hand count.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, load_from_disk
from PIL import Image as PILImage
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification
from transformers.modeling_outputs import ModelOutput
from transformers.models.vit import ViTImageProcessorPil

from helpers import topk_accuracy_bounds
from upvit_hf.evaluation import (
    Perplexity,
    TopKAccuracy,
    count_flops,
    count_parameters,
    evaluate_accuracy,
    evaluate_perplexity,
    image_throughput,
    load_image_dataset,
    load_text,
    mems_perplexity,
    sliding_window_perplexity,
    sliding_windows,
    token_throughput,
)

# ---- tiny models and data ------------------------------------------------------------------------
NUM_LABELS = 7
IMAGE = 16


def _tiny_vit(attn: str = "sdpa") -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                       image_size=IMAGE, patch_size=8, num_labels=NUM_LABELS, attn_implementation=attn)
    model = ViTForImageClassification(config).eval()
    with torch.no_grad():  # non-default LayerNorms, so nothing hides behind identity affine maps
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(1)
    config = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_inner=24, vocab_size=40, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def _processor() -> ViTImageProcessorPil:
    return ViTImageProcessorPil(size={"height": IMAGE, "width": IMAGE})


def _images(n: int) -> list[PILImage.Image]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        image = PILImage.fromarray(pixels)
        images.append(image.convert("L") if i % 4 == 0 else image)  # greyscale ones must be converted
    return images


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "saved"
    features = Features({"img": Image(), "target": ClassLabel(num_classes=NUM_LABELS)})
    data = Dataset.from_dict({"img": _images(13), "target": [i % NUM_LABELS for i in range(13)]}, features=features)
    DatasetDict({"validation": data, "train": data.select(range(3))}).save_to_disk(str(path))
    return path


# ---- accuracy --------------------------------------------------------------------------------------
def test_accuracy_matches_independent_topk(image_folder: Path) -> None:
    model = _tiny_vit()
    data = load_image_dataset(image_folder, "validation")
    assert len(data) == 13
    result = evaluate_accuracy(model, data, _processor(), image_column="img", label_column="target",
                               batch_size=5, progress=False)

    # independent: preprocess everything at once, rank classes with argsort
    images = [im.convert("RGB") for im in load_from_disk(str(image_folder))["validation"]["img"]]
    labels = np.array(load_from_disk(str(image_folder))["validation"]["target"])
    with torch.no_grad():
        logits = model(pixel_values=_processor()(images=images, return_tensors="pt")["pixel_values"]).logits
    assert set(result) == {"top1", "top5", "num_samples"} and result["num_samples"] == 13
    for k in (1, 5):  # near-ties (within 1e-4) may fall either way on another CPU
        low, high = topk_accuracy_bounds(logits, torch.from_numpy(labels), k)
        assert low - 1e-9 <= result[f"top{k}"] <= high + 1e-9, (k, low, high)
    assert 0 < topk_accuracy_bounds(logits, torch.from_numpy(labels), 5)[0] <= topk_accuracy_bounds(
        logits, torch.from_numpy(labels), 5)[1] < 1  # the test data is informative about top-5

    subset = evaluate_accuracy(model, data, _processor(), image_column="img", label_column="target",
                               top_k=(1, 3), max_samples=4, progress=False)
    assert subset["num_samples"] == 4 and set(subset) == {"top1", "top3", "num_samples"}


def test_accuracy_unknown_column_lists_available(image_folder: Path) -> None:
    data = load_image_dataset(image_folder, "validation")
    with pytest.raises(ValueError, match=r"'label'.*\['img', 'target'\]"):
        evaluate_accuracy(_tiny_vit(), data, _processor(), image_column="img", progress=False)
    with pytest.raises(ValueError, match="available splits"):
        load_image_dataset(image_folder, "test")
    with pytest.raises(ValueError, match="processor"):
        evaluate_accuracy(_tiny_vit(), data, image_column="img", label_column="target", progress=False)


def test_load_image_dataset_from_imagefolder(tmp_path: Path) -> None:
    for i, image in enumerate(_images(4)):
        folder = tmp_path / ("cat" if i % 2 else "dog")
        folder.mkdir(exist_ok=True)
        image.convert("RGB").save(folder / f"{i}.png")
    data = load_image_dataset(tmp_path, "validation")  # no split folders: the only split is used
    assert len(data) == 4 and sorted(data.features["label"].names) == ["cat", "dog"]


def test_topk_metric_configs() -> None:
    metric = TopKAccuracy()
    metric.add_batch(predictions=[[2, 0, 1], [1, 2, 0]], references=[0, 0])
    assert metric.compute(top_k=(1, 2, 3)) == {"top1": 0.0, "top2": 0.5, "top3": 1.0}
    scores = [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]
    assert TopKAccuracy("logits").compute(predictions=scores, references=[2, 0], top_k=(1, 2)) == {
        "top1": 0.5, "top2": 1.0}


# ---- perplexity --------------------------------------------------------------------------------------
def _scored(windows) -> list[int]:
    return [t for w in windows for t in range(w.target_begin, w.end)]


def test_sliding_windows_score_each_token_once() -> None:
    windows = sliding_windows(10, max_length=4, stride=2)
    assert [(w.begin, w.end, w.target_begin) for w in windows] == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    # stride == max_length: no overlap, so each window's first token has no context and is not scored
    assert _scored(sliding_windows(10, max_length=4, stride=4)) == [1, 2, 3, 5, 6, 7, 9]
    for n, length, stride in [(37, 8, 3), (64, 16, 16), (5, 8, 2), (100, 7, 1)]:
        scored = _scored(sliding_windows(n, length, stride))
        assert len(scored) == len(set(scored))
        if stride < length:
            assert scored == list(range(1, n))
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, max_length=4, stride=5)


class _ContextLM(nn.Module):
    """At position j, p(next = x_j + 1) = (c+1)/(c+2) with c = j + tokens held in memory (0 without mems).

    Logits are log-probabilities, so every NLL is known in closed form.
    """

    def __init__(self, vocab: int, with_mems: bool = False) -> None:
        super().__init__()
        self.vocab = vocab
        self.with_mems = with_mems
        self.dummy = nn.Parameter(torch.zeros(()))

    def _log_probs(self, input_ids: torch.Tensor, offset: int) -> torch.Tensor:
        b, length = input_ids.shape
        c = torch.arange(length, dtype=torch.float64) + offset
        p_hit = (c + 1) / (c + 2)
        logits = ((1 - p_hit) / (self.vocab - 1)).log()[None, :, None].expand(b, length, self.vocab).clone()
        nxt = (input_ids + 1) % self.vocab
        logits.scatter_(2, nxt[..., None], p_hit.log()[None, :, None].expand(b, length, 1))
        return logits.float()

    def forward(self, input_ids: torch.Tensor, mems: torch.Tensor | None = None) -> ModelOutput:
        offset = int(mems) if (self.with_mems and mems is not None) else 0
        out = ModelOutput(logits=self._log_probs(input_ids, offset))
        if self.with_mems:
            out["mems"] = torch.tensor(offset + input_ids.shape[1])
        return out


def _nll(c: int) -> float:
    return -math.log((c + 1) / (c + 2))


def test_sliding_window_perplexity_hand_checked() -> None:
    ids = torch.arange(10)  # every next token is x+1: the model's favourite
    model = _ContextLM(vocab=12)
    result = sliding_window_perplexity(model, ids, max_length=4, stride=2, progress=False)
    # windows (0,4,1), (2,6,4), (4,8,6), (6,10,8): the first scores window positions 1,2,3 (predicted from
    # positions 0,1,2); the others score positions 2,3, predicted from positions 1,2 (overlap = context)
    expected = _nll(0) + _nll(1) + _nll(2) + 3 * (_nll(1) + _nll(2))
    assert result.num_tokens == 9 and result.num_windows == 4
    assert result.total_nll == pytest.approx(expected, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(expected / 9), rel=1e-6)
    batched = sliding_window_perplexity(model, ids, max_length=4, stride=2, batch_size=3, progress=False)
    assert batched.total_nll == pytest.approx(result.total_nll, rel=1e-9)


def test_sliding_window_perplexity_matches_gpt2_and_guide_loop() -> None:
    model = _tiny_gpt2()
    ids = torch.randint(0, 40, (50,), generator=torch.Generator().manual_seed(0))
    # one window over everything = exp(mean next-token NLL)
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
    full = F.cross_entropy(logits[:-1].double(), ids[1:], reduction="mean").item()
    single = sliding_window_perplexity(model, ids, max_length=50, stride=50, progress=False)
    assert single.num_tokens == 49 and single.perplexity == pytest.approx(math.exp(full), rel=1e-5)

    # strided: the HF guide's loop, with exact per-token sums instead of loss × trg_len
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, 50, 8):
        end = min(begin + 16, 50)
        window = ids[begin:end][None]
        labels = window.clone()
        labels[:, : -(end - prev_end)] = -100
        with torch.no_grad():
            out = model(window).logits
        losses = F.cross_entropy(out[0, :-1].double(), labels[0, 1:], ignore_index=-100, reduction="none")
        total, count = total + losses.sum().item(), count + int((labels[0, 1:] != -100).sum())
        prev_end = end
        if end == 50:
            break
    strided = sliding_window_perplexity(model, ids, max_length=16, stride=8, batch_size=2, progress=False)
    assert strided.num_tokens == count == 49
    assert strided.perplexity == pytest.approx(math.exp(total / count), rel=1e-5)


def test_mems_perplexity_carries_memory() -> None:
    n = 23
    model = _ContextLM(vocab=30, with_mems=True)
    result = mems_perplexity(model, torch.arange(n), tgt_len=5, progress=False)
    # context of the predictor of token t is t-1 (full history through mems): Σ -log(t/(t+1)) = log n
    assert result.num_tokens == n - 1 and result.num_windows == 5
    assert result.total_nll == pytest.approx(math.log(n), rel=1e-6)
    assert result.perplexity == pytest.approx(n ** (1 / (n - 1)), rel=1e-6)


class _CharTokenizer:
    """Character ids modulo the vocabulary: enough of a tokenizer for `evaluate_perplexity`."""

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([[ord(ch) % 40 for ch in text]])}


def test_evaluate_perplexity_local_text_and_saved_dataset(tmp_path: Path) -> None:
    model = _tiny_gpt2()
    docs = [" = Title = \n", " Some text here .\n", " More text follows \n"]
    text_file = tmp_path / "wiki.txt"
    text_file.write_text("\n\n".join(docs))
    saved = tmp_path / "wiki"
    DatasetDict({"test": Dataset.from_dict({"text": docs})}).save_to_disk(str(saved))
    assert load_text(saved) == load_text(text_file) == "\n\n".join(docs)
    with pytest.raises(ValueError, match=r"\['text'\]"):
        load_text(saved, text_column="body")

    ids = _CharTokenizer()(load_text(text_file))["input_ids"][0]
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
    expected = math.exp(F.cross_entropy(logits[:-1].double(), ids[1:]).item())
    result = evaluate_perplexity(model, _CharTokenizer(), saved, max_length=len(ids), stride=len(ids),
                                 progress=False)
    assert result.num_tokens == len(ids) - 1
    assert result.perplexity == pytest.approx(expected, rel=1e-5)
    # defaults: max_length = n_positions (64), stride = 32
    default = evaluate_perplexity(model, _CharTokenizer(), text_file, progress=False)
    assert default.num_tokens == len(ids) - 1


def test_perplexity_metric_counts_exactly() -> None:
    metric = Perplexity()
    metric.add_batch(nll=[3.0, 1.0], num_tokens=[3, 1])
    metric.add(nll=2.0, num_tokens=4)
    out = metric.compute()
    assert out["num_tokens"] == 8 and out["perplexity"] == pytest.approx(math.exp(6.0 / 8))


# ---- throughput, parameters, FLOPs -----------------------------------------------------------------
class _Clock:
    """A fake `time.perf_counter` that advances 0.25 s per forward pass of the model it counts."""

    def __init__(self) -> None:
        self.now, self.forwards = 0.0, 0

    def __call__(self) -> float:
        return self.now

    def tick(self, *_: object) -> None:
        self.forwards += 1
        self.now += 0.25


def test_throughput_divides_items_by_timed_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    import upvit_hf.evaluation.throughput as throughput

    clock = _Clock()
    monkeypatch.setattr(throughput.time, "perf_counter", clock)
    vit, gpt2 = _tiny_vit(), _tiny_gpt2()
    for model in (vit, gpt2):
        model.register_forward_hook(clock.tick)
    images = image_throughput(vit, batch_size=2, warmup=1, iterations=4)
    assert clock.forwards == 5  # one untimed warm-up pass, four timed ones of 0.25 s each
    assert (images.items_per_second, images.seconds_per_batch, images.unit) == (8.0, 0.25, "images/s")
    tokens = token_throughput(gpt2, batch_size=2, seq_len=8, warmup=2, iterations=2)
    assert clock.forwards == 9 and tokens.batch_size == 2
    assert (tokens.items_per_second, tokens.unit) == (2 * 8 / 0.25, "tokens/s")


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_flops_and_params_of_linear_model() -> None:
    model = _MLP()
    assert count_parameters(model) == 8 * 16 + 16 + 16 * 4 + 4
    # 2 FLOPs per multiply-add, per sample, whatever the batch size
    assert count_flops(model, {"x": torch.randn(3, 8)}) == 2 * (8 * 16 + 16 * 4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flops_of_tiny_vit_hand_count(attn: str) -> None:
    model = _tiny_vit(attn)
    hidden, inter, layers, patch = 24, 40, 2, 8
    patches = (IMAGE // patch) ** 2
    tokens = patches + 1
    embed = 2 * (3 * patch * patch) * hidden * patches
    per_layer = 2 * tokens * hidden * hidden * 4 + 2 * 2 * tokens * tokens * hidden + 2 * 2 * tokens * hidden * inter
    head = 2 * hidden * NUM_LABELS
    assert count_flops(model) == embed + layers * per_layer + head
