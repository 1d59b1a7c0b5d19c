"""End-to-end check of the offline demo: `upvit demo --quick`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from upvit_hf.cli import main

ROWS = {"teacher", "up_pruned", "up_distilled", "scratch", "magnitude_pruned", "magnitude_distilled",
        "random_pruned", "random_distilled"}


def test_word_tokenizer_keeps_ptb_words_and_contiguous_ids() -> None:
    """Fast check of the tokenizer alone: "<unk>" occurring in the text must not leave a gap in the ids
    (an id equal to the vocabulary size crashes the embedding only when that batch is drawn)."""
    from upvit_hf.demo.data import build_word_tokenizer, encode_lines

    lines = ["the u.s. does n't <unk> it", "the dow 's <unk> N"]
    tokenizer = build_word_tokenizer(lines)
    assert sorted(tokenizer.get_vocab().values()) == list(range(len(tokenizer)))
    assert tokenizer.unk_token_id == 0 and tokenizer.eos_token_id == 1
    ids = encode_lines(tokenizer, lines + ["unseen word"])
    words = tokenizer.convert_ids_to_tokens(ids.tolist())
    assert words[:7] == ["the", "u.s.", "does", "n't", "<unk>", "it", "<eos>"]
    assert words[-3:] == ["<unk>", "<unk>", "<eos>"]
    assert int(ids.max()) < len(tokenizer)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("demo")
    # one torch thread, as conftest sets for the whole session (the default follows the machine's load)
    main(["demo", "--quick", "--threads", "1", "--output-dir", str(out)])
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_writes_table_json_and_figure(demo: tuple) -> None:
    out, returned = demo
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "| model | params |" in table and "UP-pruned (KL) + distilled" in table
    assert "test perplexity" in table and "top-1 accuracy" in table

    png = (out / "figure.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    with Image.open(out / "figure.png") as image:
        image.verify()

    results = returned
    assert results["quick"] is True
    for name, metric in (("vision", "accuracy"), ("language", "perplexity")):
        rows = {row["key"]: row for row in results[name]["rows"]}
        assert set(rows) == ROWS
        for row in rows.values():
            for field in ("params", "flops", "throughput"):
                assert _finite_positive(row[field]), (name, row["key"], field)
            assert _finite_positive(row[metric]["mean"]), (name, row["key"])
            assert all(math.isfinite(v) for v in row[metric]["values"])
        assert rows["up_distilled"]["params"] < rows["teacher"]["params"]
        assert rows["up_distilled"]["flops"] < rows["teacher"]["flops"]
    assert all(0 <= row["accuracy"]["mean"] <= 1 for row in results["vision"]["rows"])
    assert 0.2 < results["vision"]["setup"]["flops_ratio"] < 0.35  # "about a quarter of the FLOPs"
    assert 0.3 < results["language"]["setup"]["flops_ratio"] < 0.6


@pytest.mark.slow
def test_saved_models_reload_with_stock_from_pretrained(demo: tuple) -> None:
    """Reload independently and reproduce the reported metric: same logits ⇒ same accuracy / perplexity."""
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoModelForImageClassification

    from upvit_hf.demo.data import load_digit_splits, load_treebank
    from upvit_hf.evaluation import evaluate_accuracy, sliding_window_perplexity

    out, results = demo
    for section in ("vision", "language"):
        for saved in results[section]["saved_models"].values():
            assert saved["reload_ok"] is True and saved["max_abs_logit_diff"] <= 1e-5

    vision = results["vision"]
    folder = out / vision["saved_models"]["up_distilled"]["path"]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.hidden_size == vision["setup"]["pruned_widths"]["hidden_size"]
    splits = load_digit_splits()
    accuracy = evaluate_accuracy(model, splits.test, AutoImageProcessor.from_pretrained(folder), top_k=(1,),
                                 progress=False)["top1"]
    reported = {row["key"]: row for row in vision["rows"]}["up_distilled"]["accuracy"]["values"][0]
    assert accuracy == pytest.approx(reported, abs=1e-9)

    language = results["language"]
    folder = out / language["saved_models"]["up_distilled"]["path"]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.config.n_embd == language["setup"]["pruned_widths"]["hidden_size"]
    recipe = language["setup"]["recipe"]
    test = load_treebank().test[: recipe["max_test_tokens"]]
    with torch.inference_mode():
        ppl = sliding_window_perplexity(model, test, max_length=recipe["block_size"], stride=recipe["eval_stride"],
                                        batch_size=32, progress=False).perplexity
    reported = {row["key"]: row for row in language["rows"]}["up_distilled"]["perplexity"]["mean"]
    assert ppl == pytest.approx(reported, rel=1e-4)
