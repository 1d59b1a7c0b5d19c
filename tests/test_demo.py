"""The offline demo: its building blocks (fast) and `upvit demo --quick` end to end (slow)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from upvit_hf.cli import main

BASE_METHODS = {"kl", "magnitude", "random", "scratch"}  # the minimum: every criterion + scratch
BUDGETS = ("before", "short", "long")


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


def test_checkpoint_of_a_constant_rate_run_is_the_shorter_run() -> None:
    """The demo reads the short budget off a checkpoint of the long run: with a constant learning rate after
    warm-up, the model after 3 of 6 steps must equal a separate 3-step run (same seed, same data order)."""
    from transformers import ViTForImageClassification, set_seed

    from tests.tiny import vit_config
    from upvit_hf.demo.data import TensorDictDataset
    from upvit_hf.demo.recipe import student_recipe
    from upvit_hf.demo.training import train

    generator = torch.Generator().manual_seed(0)
    data = TensorDictDataset(pixel_values=torch.randn(40, 3, 8, 8, generator=generator),
                             labels=torch.randint(0, 5, (40,), generator=generator))
    probe = torch.randn(7, 3, 8, 8, generator=generator)

    def logits_sum(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(model(pixel_values=probe).logits.double().abs().sum())

    def fresh() -> ViTForImageClassification:
        set_seed(1)
        return ViTForImageClassification(vit_config())

    long = train(fresh(), data, student_recipe(6, 4, 1e-2, warmup_steps=2), seed=3, evaluate=logits_sum,
                 eval_steps=(3, 6))
    short_model = fresh()
    short = train(short_model, data, student_recipe(3, 4, 1e-2, warmup_steps=2), seed=3)
    assert sorted(long.curve) == [0, 3, 6]
    assert long.curve[3] == pytest.approx(logits_sum(short_model), rel=1e-6)
    assert long.curve[3] != pytest.approx(long.curve[6], rel=1e-3)  # the run did go on after the checkpoint
    assert short.steps == 3 and long.steps == 6


def test_comparisons_count_seeds_won_in_the_metric_direction() -> None:
    """Hand-checked: accuracy (higher better) and perplexity (lower better) on paired seeds."""
    from upvit_hf.demo.rows import comparisons

    def entry(values: list[float]) -> dict:
        return {budget: {"values": values} for budget in BUDGETS}

    accuracy = comparisons({"kl": entry([0.9, 0.8, 0.7]), "random": entry([0.85, 0.85, 0.6])}, True)
    assert {c["budget"] for c in accuracy} == set(BUDGETS)
    assert all(c["seeds_won"] == 2 and c["seeds"] == 3 for c in accuracy)
    assert accuracy[0]["advantage"] == pytest.approx((2.4 - 2.3) / 3)
    perplexity = comparisons({"kl": entry([100.0, 120.0]), "scratch": entry([300.0, 110.0])}, False)
    assert all(c["seeds_won"] == 1 for c in perplexity)
    assert perplexity[0]["advantage"] == pytest.approx((410 - 220) / 2)


def test_recipe_checks_reject_inconsistent_budgets() -> None:
    import dataclasses

    from upvit_hf.demo.recipe import check_recipe, vision_recipe

    recipe = vision_recipe(quick=True)
    check_recipe(recipe)
    for change in ({"short_steps": 3}, {"eval_steps": (4, 6)}, {"curve_target": "tiny"}, {"seeds": ()}):
        with pytest.raises(ValueError):
            check_recipe(dataclasses.replace(recipe, **change))


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    out = tmp_path_factory.mktemp("demo")
    # one torch thread, as conftest sets for the whole session (the default follows the machine's load)
    main(["demo", "--quick", "--threads", "1", "--output-dir", str(out)])
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_every_method_at_every_width_has_finite_numbers(demo: tuple) -> None:
    from upvit_hf.demo.recipe import language_recipe, vision_recipe

    out, results = demo
    assert results["quick"] is True
    for name, metric, recipe in (("vision", "accuracy", vision_recipe(True)),
                                 ("language", "perplexity", language_recipe(True))):
        section = results[name]
        teacher = section["teacher"]
        assert _finite(teacher[metric]["mean"])
        targets = {t["name"]: t for t in section["targets"]}
        assert set(targets) == set(recipe.targets) and len(targets) >= 2
        for target_name, target in targets.items():
            asked = recipe.targets[target_name]
            widths = target["pruned_widths"]
            assert (widths["hidden_size"], widths["num_attention_heads"], widths["intermediate_size"]) == (
                asked.hidden_size, asked.num_attention_heads, asked.intermediate_size)
            assert widths["num_hidden_layers"] == section["setup"]["teacher_widths"]["num_hidden_layers"]
            for field in ("params", "flops", "throughput"):
                assert _finite(target[field]) and target[field] > 0
            assert target["params"] < teacher["params"] and 0 < target["flops_ratio"] < 1
            assert BASE_METHODS <= set(target["methods"])
            for key, entry in target["methods"].items():
                for budget in BUDGETS:
                    values = entry[budget]["values"]
                    assert len(values) == len(recipe.seeds) and all(map(_finite, values)), (name, key, budget)
                    if metric == "accuracy":
                        assert all(0 <= v <= 1 for v in values)
                    else:
                        assert all(v > 1 for v in values)
                curve = entry["curve"]
                assert curve["steps"] == [0, *recipe.eval_steps] and all(map(_finite, curve["mean"]))
                assert curve["mean"][-1] == pytest.approx(entry["long"]["mean"])
            baselines = {(c["baseline"], c["budget"]) for c in target["comparisons"]}
            assert baselines == {(key, b) for key in target["methods"] if key != "kl" for b in BUDGETS}
    assert "| target | method |" in (out / "results.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_figure_is_a_png(demo: tuple) -> None:
    from PIL import Image

    out, _ = demo
    assert (out / "figure.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out / "figure.png") as image:
        image.verify()


@pytest.mark.slow
def test_saved_models_reload_with_stock_from_pretrained(demo: tuple) -> None:
    """Reload independently and reproduce the reported metric: same logits ⇒ same accuracy / perplexity."""
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoModelForImageClassification

    from upvit_hf.demo.data import load_digit_splits, load_treebank
    from upvit_hf.evaluation import evaluate_accuracy, sliding_window_perplexity

    out, results = demo
    for section in ("vision", "language"):
        saved = results[section]["saved_models"]
        assert set(saved) == {"teacher"} | {t["name"] for t in results[section]["targets"]}
        assert all(s["reload_ok"] is True and s["max_abs_logit_diff"] <= 1e-5 for s in saved.values())

    vision = results["vision"]
    target = vision["targets"][0]
    folder = out / vision["saved_models"][target["name"]]["path"]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert model.config.hidden_size == target["pruned_widths"]["hidden_size"]
    splits = load_digit_splits()
    accuracy = evaluate_accuracy(model, splits.test, AutoImageProcessor.from_pretrained(folder), top_k=(1,),
                                 progress=False)["top1"]
    assert accuracy == pytest.approx(target["methods"]["kl"]["long"]["values"][0], abs=1e-9)

    language = results["language"]
    target = language["targets"][-1]
    folder = out / language["saved_models"][target["name"]]["path"]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.config.n_embd == target["pruned_widths"]["hidden_size"]
    recipe = language["setup"]["recipe"]
    test = load_treebank().test[: recipe["max_test_tokens"]]
    with torch.inference_mode():
        ppl = sliding_window_perplexity(model, test, max_length=recipe["block_size"], stride=recipe["eval_stride"],
                                        batch_size=32, progress=False).perplexity
    assert ppl == pytest.approx(target["methods"]["kl"]["long"]["values"][0], rel=1e-4)
