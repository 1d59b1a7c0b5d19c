"""The `upvit` command line end to end, offline: score → prune → distill → evaluate → push → from_pretrained."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from huggingface_hub import ModelCard
from PIL import Image as PILImage
from helpers import topk_accuracy_bounds
from tiny import gpt2_config, randomize, tiny_tokenizer, vit_config, word_corpus
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    GPT2LMHeadModel,
    ViTForImageClassification,
    ViTImageProcessor,
)

from upvit_hf import ImportanceScores, UPPruner
from upvit_hf.cli import main


def images(n: int, seed: int) -> list[PILImage.Image]:
    rng = np.random.default_rng(seed)
    return [PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    randomize(ViTForImageClassification(vit_config())).save_pretrained(root / "base")
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(root / "base")
    features = Features({"image": Image(), "label": ClassLabel(num_classes=5)})
    split = lambda n, seed: Dataset.from_dict(  # noqa: E731
        {"image": images(n, seed), "label": [i % 5 for i in range(n)]}, features=features)
    DatasetDict(train=split(12, 0), test=split(7, 1)).save_to_disk(root / "data")
    return root


def upvit(*args: str) -> None:
    main([str(a) for a in args])


FRESH_LOAD = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForImageClassification
    model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
    with torch.no_grad():
        torch.save(model(pixel_values=torch.load(sys.argv[2])).logits, sys.argv[3])
    assert "upvit_hf" not in sys.modules
""")


def test_score_prune_distill_evaluate_push_reload(assets, tmp_path, local_hub, capsys):
    base, data = assets / "base", assets / "data"
    upvit("score", "--model", base, "--dataset", data, "--proxy-size", 6, "--batch-size", 3,
          "--output", tmp_path / "scores.safetensors")
    assert ImportanceScores.load(tmp_path / "scores.safetensors").meta["proxy_size"] == 6

    upvit("prune", "--model", base, "--scores", tmp_path / "scores.safetensors", "--hidden-size", 8,
          "--num-heads", 2, "--intermediate-size", 12, "--output", tmp_path / "pruned")
    pruned = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert (pruned.config.hidden_size, pruned.config.num_attention_heads, pruned.config.intermediate_size) == (8, 2, 12)
    card = ModelCard.load(tmp_path / "pruned" / "README.md")
    assert {"pruning", "upvit"} <= set(card.data.tags)
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+ \| [^|]+) \|$", card.text, flags=re.M))
    assert rows["hidden size (residual channels)"] == "16 | 8" and rows["attention heads"] == "4 | 2"
    assert rows["FFN intermediate size"] == "24 | 12"
    base_model = AutoModelForImageClassification.from_pretrained(base)
    stats = card.data.to_dict()["upvit"]
    assert stats["original_stats"]["params"] == sum(p.numel() for p in base_model.parameters())
    assert stats["pruned_stats"]["params"] == sum(p.numel() for p in pruned.parameters())

    upvit("distill", "--student", tmp_path / "pruned", "--teacher", base, "--dataset", data,
          "--eval_split", "test", "--output_dir", tmp_path / "distilled", "--max_steps", 2,
          "--per_device_train_batch_size", 4, "--report_to", "none", "--save_strategy", "no", "--use_cpu",
          "--cutmix_alpha", 0)
    distilled = AutoModelForImageClassification.from_pretrained(tmp_path / "distilled").eval()
    assert not torch.equal(distilled.classifier.weight, pruned.classifier.weight)

    upvit("evaluate", "--model", tmp_path / "distilled", "--dataset", data, "--split", "test", "--batch-size", 4,
          "--output", tmp_path / "eval.json")
    report = json.loads((tmp_path / "eval.json").read_text())
    processor = ViTImageProcessor.from_pretrained(tmp_path / "distilled")
    test = DatasetDict.load_from_disk(data)["test"]
    with torch.no_grad():
        logits = distilled(**processor(images=list(test["image"]), return_tensors="pt")).logits
    low, high = topk_accuracy_bounds(logits, torch.tensor(list(test["label"])), k=1)
    assert low - 1e-9 <= report["metrics"]["top1"] <= high + 1e-9
    assert report["stats"]["params"] == sum(p.numel() for p in distilled.parameters())
    assert "top1" in capsys.readouterr().out

    upvit("push", tmp_path / "distilled", "upvit-tester/cli-vit", "--metrics", tmp_path / "eval.json")
    x = torch.randn(2, 3, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    loaded = subprocess.run([sys.executable, "-c", FRESH_LOAD, "upvit-tester/cli-vit", tmp_path / "x.pt",
                             tmp_path / "y.pt"], capture_output=True, text=True, env=os.environ.copy())
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), distilled(pixel_values=x).logits, rtol=0, atol=0)
    card = ModelCard(local_hub.files("upvit-tester/cli-vit")["README.md"].decode())
    assert "upvit" in card.data.tags and "top1" in card.text


def test_prune_depth_and_width_on_the_fly(assets, tmp_path):
    upvit("prune", "--model", assets / "base", "--dataset", assets / "data", "--proxy-size", 4, "--num-layers", 1,
          "--ratio", 0.5, "--output", tmp_path / "small")
    small = AutoModelForImageClassification.from_pretrained(tmp_path / "small")
    assert (small.config.num_hidden_layers, small.config.hidden_size) == (1, 8)
    steps = [step["operation"] for step in small.config.upvit_pruning["steps"]]
    assert steps == ["depth", "width"]


@pytest.mark.parametrize("args, message", [
    (["prune", "--model", "{tmp}/missing", "--ratio", "0.5", "--output", "{tmp}/out"], "does not exist"),
    (["score", "--model", "{base}", "--dataset", "{data}", "--column", "pixels", "--output", "{tmp}/s"],
     "pixels"),
    (["prune", "--model", "{base}", "--dataset", "{data}", "--hidden-size", "8", "--num-heads", "3",
      "--intermediate-size", "12", "--output", "{tmp}/out"], "must divide"),
    (["prune", "--model", "{base}", "--scores", "{tmp}/other.safetensors", "--ratio", "0.5", "--output",
      "{tmp}/out"], "do not match"),
    (["prune", "--model", "{base}", "--output", "{tmp}/out"], "nothing to do"),
    (["push", "{tmp}/missing", "me/x"], "not a folder"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(assets, tmp_path, capsys, args, message):
    ImportanceScores(torch.rand(24), [torch.rand(24)] * 2, [torch.rand(30)] * 2).save(tmp_path / "other.safetensors")
    before = set(tmp_path.iterdir())
    argv = [a.format(tmp=tmp_path, base=assets / "base", data=assets / "data") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"upvit {args[0]}: error:"), lines
    assert set(tmp_path.iterdir()) == before


def scores_for_base(base, **meta) -> ImportanceScores:
    """Scores with the shapes of the `assets` model (16 wide, 4 heads, FFN 24, 2 layers)."""
    g = torch.Generator().manual_seed(0)
    return ImportanceScores(torch.rand(16, generator=g), [torch.rand(16, generator=g) for _ in range(2)],
                            [torch.rand(24, generator=g) for _ in range(2)], meta=meta)


@pytest.fixture
def bad_inputs(assets, tmp_path):
    """The files the bad-input cases name: corrupt, foreign, non-finite scores and non-object metrics."""
    base = assets / "base"
    widths = UPPruner(AutoModelForImageClassification.from_pretrained(base)).adapter.widths.as_dict()
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    scores_for_base(base, model="someone/else", widths=widths).save(tmp_path / "foreign.safetensors")
    scores_for_base(base, model=str(base.resolve()), widths={**widths, "num_attention_heads": 2}).save(
        tmp_path / "other_widths.safetensors")
    nan = scores_for_base(base)
    nan.ffn[1][3] = float("nan")
    nan.save(tmp_path / "nan.safetensors")
    (tmp_path / "metrics.json").write_text("[1, 2]")
    return tmp_path


PRUNE = ["prune", "--model", "{base}", "--ratio", "0.5", "--output", "{tmp}/out"]


@pytest.mark.parametrize("args, message", [
    ([*PRUNE, "--scores", "{tmp}/corrupt.safetensors"], "not a readable scores file"),
    ([*PRUNE, "--scores", "{tmp}/foreign.safetensors"], "computed on 'someone/else'"),
    ([*PRUNE, "--scores", "{tmp}/other_widths.safetensors"], "widths"),
    ([*PRUNE, "--scores", "{tmp}/nan.safetensors"], "NaN or infinite scores in ffn.1"),
    ([*PRUNE, "--scores", "{tmp}/missing.safetensors"], "does not exist"),
    ([*PRUNE, "--scores", "{tmp}/foreign.safetensors", "--num-layers", "1"], "cannot be combined"),
    ([*PRUNE, "--dataset", "{data}", "--batch-size", "0"], "--batch-size: expected a positive integer"),
    ([*PRUNE, "--dataset", "{data}", "--proxy-size", "0"], "--proxy-size: expected a positive integer"),
    ([*PRUNE, "--dataset", "{data}", "--num-layers", "-1"], "--num-layers: expected a positive integer"),
    (["score", "--model", "{base}", "--dataset", "{data}", "--seq-len", "x", "--output", "{tmp}/s"],
     "expected a positive integer, got 'x'"),
    (["evaluate", "--model", "{base}", "--dataset", "{data}", "--split", "test", "--label-column", "target",
      "--output", "{tmp}/e.json"], "['image', 'label']"),
    (["evaluate", "--model", "{base}", "--dataset", "{data}", "--max-samples", "0"], "positive integer"),
    (["push", "{base}", "me/x", "--metrics", "{tmp}/metrics.json"], "JSON object"),
    (["demo", "--threads", "0"], "positive integer"),
    (["distill", "--student", "{base}", "--teacher", "{base}", "--dataset", "{data}", "--eval_split", "test",
      "--label_column", "target", "--output_dir", "{tmp}/d", "--use_cpu", "--report_to", "none"],
     "['image', 'label']"),
])
def test_every_bad_input_is_one_line_exit_2_no_traceback_no_output(assets, bad_inputs, capsys, args, message):
    tmp = bad_inputs
    before = sorted(tmp.rglob("*"))
    argv = [a.format(tmp=tmp, base=assets / "base", data=assets / "data") for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]  # no bars
    assert len(err) == 1 and message in err[0] and err[0].startswith(f"upvit {args[0]}: error:"), err
    assert sorted(tmp.rglob("*")) == before


def test_force_uses_foreign_scores_by_their_ranking(assets, bad_inputs, tmp_path):
    upvit(*[a.format(tmp=tmp_path, base=assets / "base") for a in PRUNE], "--scores",
          bad_inputs / "foreign.safetensors", "--force")
    pruned = AutoModelForImageClassification.from_pretrained(tmp_path / "out")
    base = AutoModelForImageClassification.from_pretrained(assets / "base")
    scores = ImportanceScores.load(bad_inputs / "foreign.safetensors")
    kept = scores.residual.topk(8).indices.sort().values  # the 8 best-scored residual channels, in order
    torch.testing.assert_close(pruned.vit.embeddings.cls_token, base.vit.embeddings.cls_token[..., kept],
                               rtol=0, atol=0)


def test_tilde_paths_are_expanded(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "base").symlink_to(assets / "base")
    upvit("score", "--model", "~/base", "--method", "magnitude", "--output", "~/s.safetensors")
    assert ImportanceScores.load(tmp_path / "s.safetensors").meta["method"] == "magnitude"


def test_console_script_reports_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "upvit_hf.cli", "prune", "--model", str(tmp_path / "nope"),
                          "--ratio", "0.5", "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"upvit prune: error: model folder {tmp_path / 'nope'} does not exist"]
    assert not (tmp_path / "out").exists()


def test_every_subcommand_has_help_with_an_example(capsys):
    for command in ("score", "prune", "evaluate", "push", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "example" in capsys.readouterr().out
    main(["distill", "--help"])
    assert "examples:" in capsys.readouterr().out


def test_language_model_score_prune_evaluate(tmp_path):
    tokenizer = tiny_tokenizer()
    randomize(GPT2LMHeadModel(gpt2_config(vocab_size=len(tokenizer), n_head=4))).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "train.txt").write_text(word_corpus(seed=0))
    (tmp_path / "test.txt").write_text(word_corpus(seed=1))
    upvit("prune", "--model", tmp_path / "lm", "--dataset", tmp_path / "train.txt", "--proxy-size", 4, "--seq-len", 8,
          "--batch-size", 2, "--ratio", 0.5, "--output", tmp_path / "half")
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "half")
    assert (half.config.n_embd, half.config.n_head) == (4, 2) and half.lm_head.weight is half.transformer.wte.weight
    assert (tmp_path / "half" / "tokenizer.json").exists()

    upvit("evaluate", "--model", tmp_path / "half", "--dataset", tmp_path / "test.txt", "--max-length", 12,
          "--stride", 12, "--output", tmp_path / "eval.json")
    report = json.loads((tmp_path / "eval.json").read_text())
    ids = tokenizer(word_corpus(seed=1), return_tensors="pt")["input_ids"][0]
    nll, count = 0.0, 0
    with torch.no_grad():  # non-overlapping windows of 12: each window's first token has no context
        for window in ids.split(12):
            logits = half(input_ids=window[None]).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum"))
            count += len(window) - 1
    assert report["metrics"]["num_tokens"] == count
    assert report["metrics"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
