"""Fisher scores, exact scoring of a channel subset, refinement near the cut, hybrid scores.

References are computed here with autograd on float64 copies whose masks are applied by hooks written in this
file (not the library's masks): the mask-weighted LayerNorm, writers and the embedding output scaled, q/k/v
outputs and the FFN input scaled.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from tiny import gpt2_config, image_batches, randomize, token_batches, vit_config
from transformers import GPT2LMHeadModel, ViTForImageClassification

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.scoring import exact as exact_module
from upvit_hf.scoring.refine import merge, tiers
from upvit_hf.targets import PruningPlan


# ---------------------------------------------------------------------------------------------- hand-made masks
def weighted_layer_norm(x: torch.Tensor, m: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = (m * x).sum(-1, keepdim=True) / m.sum()
    var = (m * (x - mean) ** 2).sum(-1, keepdim=True) / m.sum()
    return m * ((x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias)


def vit_taps(model: ViTForImageClassification) -> list[tuple[torch.nn.Module, str, str]]:
    """(module, how, mask) for a ViT: 'out' scales the output, 'in' the input, 'norm' replaces a LayerNorm."""
    taps = [(model.vit.embeddings, "out", "residual"), (model.vit.layernorm, "norm", "residual")]
    for i, layer in enumerate(model.vit.layers):
        attn = layer.attention
        taps += [(attn.o_proj, "out", "residual"), (layer.mlp.fc2, "out", "residual"),
                 (layer.layernorm_before, "norm", "residual"), (layer.layernorm_after, "norm", "residual"),
                 (attn.q_proj, "out", f"attention.{i}"), (attn.k_proj, "out", f"attention.{i}"),
                 (attn.v_proj, "out", f"attention.{i}"), (layer.mlp.fc2, "in", f"ffn.{i}")]
    return taps


def gpt2_taps(model: GPT2LMHeadModel) -> list[tuple[torch.nn.Module, str, str]]:
    t = model.transformer
    taps = [(t.drop, "out", "residual"), (t.ln_f, "norm", "residual")]  # drop: after wte + wpe
    for i, block in enumerate(t.h):
        taps += [(block.attn.c_proj, "out", "residual"), (block.mlp.c_proj, "out", "residual"),
                 (block.ln_1, "norm", "residual"), (block.ln_2, "norm", "residual"),
                 (block.attn.c_attn, "out3", f"attention.{i}"), (block.mlp.c_proj, "in", f"ffn.{i}")]
    return taps


def hooked(taps, masks: dict[str, torch.Tensor]) -> list:
    handles = []
    for module, how, name in taps:
        m = masks[name]
        if how == "out":
            handles.append(module.register_forward_hook(lambda mod, a, out, m=m: out * m))
        elif how == "out3":
            handles.append(module.register_forward_hook(lambda mod, a, out, m=m: out * torch.cat([m, m, m])))
        elif how == "in":
            handles.append(module.register_forward_pre_hook(lambda mod, a, m=m: (a[0] * m,)))
        else:
            handles.append(module.register_forward_hook(lambda mod, a, out, m=m: weighted_layer_norm(a[0], m, mod)))
    return handles


def mask_names(config) -> dict[str, int]:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    ffn = config.n_inner if config.model_type == "gpt2" else config.intermediate_size
    names = {"residual": config.hidden_size}
    for i in range(config.num_hidden_layers):
        names[f"attention.{i}"] = config.num_attention_heads * head_dim
        names[f"ffn.{i}"] = ffn
    return names


def masked_log_probs(model, taps, masks, inputs) -> torch.Tensor:
    handles = hooked(taps, masks)
    try:
        return torch.log_softmax(model(**inputs).logits, -1)
    finally:
        for h in handles:
            h.remove()


def ones(config, requires_grad=False) -> dict[str, torch.Tensor]:
    return {name: torch.ones(w, dtype=torch.float64, requires_grad=requires_grad) for name, w in mask_names(config).items()}


def flat(scores) -> dict[str, torch.Tensor]:
    out = {"residual": scores.residual}
    out.update({f"attention.{i}": s for i, s in enumerate(scores.attention)})
    out.update({f"ffn.{i}": s for i, s in enumerate(scores.ffn)})
    return out


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vit():
    model = randomize(ViTForImageClassification(vit_config(head_dim=3))).double()  # widths 16 / 12 / 24
    batches = [{"pixel_values": b["pixel_values"].double()} for b in image_batches(model.config)]
    return model, batches


def single_samples(batches):
    return [{k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(next(iter(b.values())).shape[0])]


# ---------------------------------------------------------------------------------------------- Fisher
def vit_fisher_reference(model, batches) -> dict[str, torch.Tensor]:
    """½ Σ_x Σ_y q(y|x)·(∂ log p(y|x)/∂m)², one sample and one class at a time."""
    reference = {name: torch.zeros(w, dtype=torch.float64) for name, w in mask_names(model.config).items()}
    taps = vit_taps(model)
    for sample in single_samples(batches):
        masks = ones(model.config, requires_grad=True)
        logp = masked_log_probs(model, taps, masks, sample)[0]
        with torch.no_grad():
            torch.testing.assert_close(logp, torch.log_softmax(model(**sample).logits[0], -1))  # m = 1: stock
        for y in range(logp.numel()):
            grads = torch.autograd.grad(logp[y], list(masks.values()), retain_graph=True)
            for name, g in zip(masks, grads):
                reference[name] += 0.5 * logp[y].exp().detach() * g**2
    return reference


def test_fisher_equals_exact_expectation_of_squared_mask_gradients(vit):
    model, batches = vit
    reference = vit_fisher_reference(model, batches)
    for labels in (5, 16):  # at least as many labels as the 5 classes: every class, exactly
        scores = UPPruner(model).score(batches, method="fisher", labels_per_input=labels, show_progress=False)
        assert scores.meta["expectation"] == "exact"
        for name, values in flat(scores).items():
            torch.testing.assert_close(values, reference[name], rtol=1e-9, atol=1e-12, msg=name)


def test_top_classes_plus_one_drawn_from_the_rest_is_unbiased(vit):
    """labels_per_input=4 of 5 classes: each sample's 3 most likely classes exactly, one of the other 2 drawn."""
    model, batches = vit
    reference = vit_fisher_reference(model, batches)
    pruner = UPPruner(model)
    runs = [flat(pruner.score(batches, method="fisher", labels_per_input=4, seed=seed, show_progress=False))
            for seed in range(40)]
    assert runs[0]["residual"].ne(runs[1]["residual"]).any()  # the seed matters: a label is drawn
    for name in reference:
        mean = torch.stack([run[name] for run in runs]).mean(0)
        # the random model's rare classes have large gradients: measured over 10-40 seeds, the mean's largest
        # channel error was ≤ 19% and its total's ≤ 3%
        torch.testing.assert_close(mean, reference[name], rtol=0.4, atol=0, msg=name)
        assert float(mean.sum()) == pytest.approx(float(reference[name].sum()), rel=0.1)


def test_fisher_is_the_second_order_term_of_the_kl_of_a_scaled_channel(vit):
    """KL(q ‖ p with channel c scaled by 1−ε) = score(c)·ε² + O(ε³): relative error shrinks with ε."""
    model, batches = vit
    scores = flat(UPPruner(model).score(batches, method="fisher", labels_per_input=5, show_progress=False))  # exact
    taps = vit_taps(model)
    inputs = {"pixel_values": torch.cat([b["pixel_values"] for b in batches])}
    with torch.no_grad():
        q = torch.log_softmax(model(**inputs).logits, -1)

    def relative_error(name: str, channel: int, eps: float) -> float:
        masks = ones(model.config)
        masks[name][channel] = 1 - eps
        with torch.no_grad():
            p = masked_log_probs(model, taps, masks, inputs)
        kl = float((q.exp() * (q - p)).sum())
        return abs(kl - float(scores[name][channel]) * eps**2) / (float(scores[name][channel]) * eps**2)

    for name, width in mask_names(model.config).items():
        for channel in range(0, width, 5):
            coarse, fine = relative_error(name, channel, 1e-2), relative_error(name, channel, 1e-3)
            assert fine < 0.05, (name, channel, fine)
            assert fine < coarse / 4 or fine < 1e-4, (name, channel, coarse, fine)


def test_language_model_fisher_is_the_per_token_fisher_sum():
    """Sampled labels per position estimate ½ Σ_x Σ_t Σ_y q_t(y)·(∂ log p_t(y)/∂m)² (padding excluded)."""
    model = randomize(GPT2LMHeadModel(gpt2_config())).double()
    batches = token_batches(model.config, lengths=((5, 3),))
    scores = flat(UPPruner(model).score(batches, method="fisher", labels_per_input=800, show_progress=False))
    reference = {name: torch.zeros(w, dtype=torch.float64) for name, w in mask_names(model.config).items()}
    taps = gpt2_taps(model)
    for sample in single_samples(batches):
        masks = ones(model.config, requires_grad=True)
        logp = masked_log_probs(model, taps, masks, sample)[0]
        for t in range(int(sample["attention_mask"].sum())):  # right padding: the first n positions are real
            for y in range(logp.shape[-1]):
                grads = torch.autograd.grad(logp[t, y], list(masks.values()), retain_graph=True)
                for name, g in zip(masks, grads):
                    reference[name] += 0.5 * logp[t, y].exp().detach() * g**2
    # a Monte-Carlo estimate from 800 label draws per position: over seeds 0-5 the largest channel error was
    # 6-13% and the error of each component's total 2-6%
    for name in reference:
        torch.testing.assert_close(scores[name], reference[name], rtol=0.3, atol=0, msg=name)
        assert float(scores[name].sum()) == pytest.approx(float(reference[name].sum()), rel=0.15)


def test_fisher_meta_and_bad_options(vit):
    model, batches = vit
    pruner = UPPruner(model)
    default = pruner.score(batches, method="fisher", show_progress=False)
    sampled = pruner.score(batches, method="fisher", labels_per_input=2, seed=3, show_progress=False)
    assert default.meta["expectation"] == "sampled" and default.meta["labels_per_input"] == 4  # 4 of 5 classes
    assert sampled.meta["expectation"] == "sampled" and sampled.meta["labels_per_input"] == 2
    assert sampled.meta["seed"] == 3 and sampled.meta["proxy_size"] == 5
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="labels_per_input"):
            pruner.score(batches, method="fisher", labels_per_input=bad)
    with pytest.raises(ValueError, match="proxy"):
        pruner.score(None, method="fisher")
    assert model.training is False and all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------- refinement
def test_merge_keeps_every_channel_on_its_side_of_the_band():
    nan = float("nan")
    approximate = torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0, 5.0], dtype=torch.float64)
    above, inside = tiers(approximate, keep=3, band=1 / 6)  # ±1 rank around the cut after rank 3: ranks 2, 3
    assert above.tolist() == [True, True, False, False, False, False]
    assert inside.tolist() == [False, False, True, True, False, False]
    exact = torch.tensor([nan, nan, 0.1, 0.5, nan, nan], dtype=torch.float64)
    merged = merge(approximate, exact, above, inside)
    assert merged[2:4].tolist() == [0.1, 0.5]
    assert merged[0] > merged[1] > 0.5 and 0.1 > merged[4] > merged[5]
    assert torch.topk(merged, 3).indices.sort().values.tolist() == [0, 1, 3]  # the band's exact winner

    # attention: each merged-head group has its own cut (keep 1 of 3 per group, ±1 rank: ranks 0 and 1)
    approximate = torch.tensor([3.0, 2.0, 1.0, 6.0, 5.0, 4.0], dtype=torch.float64)
    above, inside = tiers(approximate, keep=1, band=1 / 3, groups=2)
    assert not above.any() and inside.tolist() == [True, True, False, True, True, False]
    exact = torch.tensor([0.2, 0.9, nan, 0.3, 0.1, nan], dtype=torch.float64)
    merged = merge(approximate, exact, above, inside, groups=2).view(2, 3)
    assert merged[0, 2] < 0.2 and merged[1, 2] < 0.1
    assert merged.argmax(dim=1).tolist() == [1, 0]


def test_refine_with_a_band_covering_every_channel_is_exact_kl(vit):
    model, batches = vit
    pruner = UPPruner(model)
    exact = pruner.score(batches, variants_per_pass=4, show_progress=False)
    magnitude = pruner.score(method="magnitude")
    refined = pruner.refine(magnitude, PruningTarget(8, 2, 12, head_dim=3), batches, band=1.0, variants_per_pass=4,
                            show_progress=False)
    for name, values in flat(exact).items():
        assert torch.equal(flat(refined)[name], values), name
    assert refined.meta["exact_cost_fraction"] == 1.0 and refined.meta["exact_channel_fraction"] == 1.0


def test_refine_with_a_narrow_band_runs_exact_kl_only_on_band_channels(vit, monkeypatch):
    model, batches = vit
    pruner = UPPruner(model)
    exact = flat(pruner.score(batches, show_progress=False))
    approximate = pruner.score(method="magnitude")
    target = PruningTarget(8, 2, 12, head_dim=3)  # 2 groups of 6 attention dims keep 3 each
    band = {"residual": 0.125, "attention": 1 / 6, "ffn": 0.125}  # ±2, ±1, ±3 ranks

    # the band written out here: ranks by the approximate scores, ± the half-width around the keep count
    def band_of(values: torch.Tensor, keep: int, half: int) -> list[int]:
        order = torch.argsort(values, descending=True, stable=True).tolist()
        return sorted(order[keep - half : keep + half])

    expected = {"residual": band_of(approximate.residual, 8, 2)}
    for i, values in enumerate(approximate.attention):
        expected[f"attention.{i}"] = sorted(g * 6 + c for g in range(2) for c in band_of(values[g * 6 : g * 6 + 6], 3, 1))
    for i, values in enumerate(approximate.ffn):
        expected[f"ffn.{i}"] = band_of(values, 12, 3)

    calls = []
    original = exact_module.variant_masks

    def spy(channels, width, rows, like):
        calls.extend((width, int(c)) for c in channels)
        return original(channels, width, rows, like)

    monkeypatch.setattr(exact_module, "variant_masks", spy)
    refined = pruner.refine(approximate, target, batches, band=band, show_progress=False)
    monkeypatch.undo()

    widths = mask_names(model.config)  # 16 / 12 / 24: each component's variants are told apart by width
    want = Counter()
    for name, channels in expected.items():
        want.update((widths[name], c) for c in channels)
    assert Counter(calls) == Counter({key: n * len(batches) for key, n in want.items()})

    chosen = refined.meta["exact_channels"]
    assert chosen["residual"] == expected["residual"]
    assert chosen["attention"] == [expected["attention.0"], expected["attention.1"]]
    assert chosen["ffn"] == [expected["ffn.0"], expected["ffn.1"]]
    total = 16 + 2 * (12 + 24)
    assert refined.meta["exact_channel_fraction"] == pytest.approx((4 + 2 * (4 + 6)) / total)
    # cost in suffix branches + readout: residual 4+1, attention of layer l 4−2l+1, FFN of layer l 4−2l
    cost = lambda r, a, f: r * 5 + a[0] * 5 + a[1] * 3 + f[0] * 4 + f[1] * 2  # noqa: E731
    assert refined.meta["exact_cost_fraction"] == pytest.approx(cost(4, (4, 4), (6, 6)) / cost(16, (12, 12), (24, 24)))

    # band channels carry their exact KL; the plan keeps every above-band channel and the band's exact best
    for name, channels in expected.items():
        torch.testing.assert_close(flat(refined)[name][channels], exact[name][channels], rtol=1e-9, atol=0)
    plan = PruningPlan.from_scores(refined, pruner.adapter.widths, pruner.check_target(target))
    order = torch.argsort(approximate.residual, descending=True, stable=True).tolist()
    band_exact = exact["residual"][expected["residual"]].sort(descending=True).values
    assert band_exact[1] - band_exact[2] > 1e-6 * band_exact[1]  # no near-tie at the cut
    best = [expected["residual"][i] for i in exact["residual"][expected["residual"]].argsort(descending=True)[:2]]
    assert plan.residual.tolist() == sorted(order[:6] + best)
    pruner.prune(target, refined)  # a valid plan end to end


def test_refine_bad_bands(vit):
    model, batches = vit
    pruner = UPPruner(model)
    scores = pruner.score(method="magnitude")
    target = PruningTarget(8, 2, 12, head_dim=3)
    for bad, message in ((-0.1, "band"), ({"mlp": 0.1}, "unknown band"), ({"ffn": "x"}, "band")):
        with pytest.raises(ValueError, match=message):
            pruner.refine(scores, target, batches, band=bad)
    with pytest.raises(ValueError, match="proxy"):
        pruner.refine(scores, target, None)


# ---------------------------------------------------------------------------------------------- hybrid
def test_hybrid_takes_exact_kl_and_fisher_by_component(vit):
    model, batches = vit
    pruner = UPPruner(model)
    exact = flat(pruner.score(batches, show_progress=False))
    fisher = flat(pruner.score(batches, method="fisher", show_progress=False))
    hybrid = pruner.score(iter(batches), method="hybrid", show_progress=False)  # a one-shot iterator is kept
    for name, values in flat(hybrid).items():
        reference = fisher[name] if name.startswith("ffn") else exact[name]
        torch.testing.assert_close(values, reference, rtol=1e-9, atol=0, msg=name)
    assert hybrid.meta["components"] == {"residual": "kl", "attention": "kl", "ffn": "fisher"}
    cost = (16 * 5 + 12 * 5 + 12 * 3) / (16 * 5 + 12 * 5 + 12 * 3 + 24 * 4 + 24 * 2)
    assert hybrid.meta["exact_cost_fraction"] == pytest.approx(cost)
    with pytest.raises(ValueError, match="unknown components"):
        pruner.score(batches, method="hybrid", exact_components=("mlp",))


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_fisher_scores_then_refined_prune(tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from upvit_hf import ImportanceScores
    from upvit_hf.cli import main
    from tiny import tiny_tokenizer, word_corpus

    tokenizer = tiny_tokenizer()
    randomize(GPT2LMHeadModel(gpt2_config(vocab_size=len(tokenizer), n_head=4))).save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    (tmp_path / "train.txt").write_text(word_corpus(seed=0))
    proxy = ["--dataset", tmp_path / "train.txt", "--proxy-size", 4, "--seq-len", 8, "--batch-size", 2]
    main([str(a) for a in ("score", "--model", tmp_path / "lm", *proxy, "--method", "fisher", "--labels-per-input", 2,
                           "--output", tmp_path / "fisher.safetensors")])
    meta = ImportanceScores.load(tmp_path / "fisher.safetensors").meta
    assert (meta["method"], meta["labels_per_input"], meta["proxy_size"]) == ("fisher", 2, 4)

    main([str(a) for a in ("prune", "--model", tmp_path / "lm", *proxy, "--scores", tmp_path / "fisher.safetensors",
                           "--refine-band", 0.25, "--ratio", 0.5, "--output", tmp_path / "half")])
    half = AutoModelForCausalLM.from_pretrained(tmp_path / "half")
    assert half.config.n_embd == 4 and half.config.upvit_pruning["steps"][-1]["method"] == "refined"

    for extra, message in ((["--refine-band", "0.1", "--num-layers", "1"], "width target"),
                           (["--refine-band", "0.1", "--ratio", "0.5"], "approximate scores")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in ("prune", "--model", tmp_path / "lm", *proxy, *extra, "--output", tmp_path / "x")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
