"""Pruning ViT/DeiT: physical-removal equivalence, head merging, stock reload, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import random_scores, top_sorted
from tiny import deit_config, image_batches, randomize, vit_config
from transformers import (
    BertConfig,
    BertModel,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    DeiTModel,
    ViTForImageClassification,
    ViTModel,
)

from upvit_hf import ImportanceScores, PruningTarget, UPPruner
from upvit_hf.adapters import adapter_for


def physically_reduced(model, scores, hidden, head_dim, intermediate):
    """Float64 reference written from scratch: slice each tensor by hand, keep every head, keep the
    original attention scale (the true meaning of removing dims, no constants changed)."""
    config = model.config
    heads, old_head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    res = top_sorted(scores.residual, hidden)
    state = {k: v.double() for k, v in model.state_dict().items()}
    new = {}
    for key, t in state.items():
        if key.endswith(("cls_token", "distillation_token", "position_embeddings")):
            t = t[..., res]
        elif "projection" in key or "layernorm" in key:
            t = t[res]
        elif key.endswith("classifier.weight"):
            t = t[:, res]
        elif key.endswith("pooler.dense.weight"):  # reads the residual; writes config.pooler_output_size dims
            t = t[:, res]
        new[key] = t
    prefix = "" if model.base_model is model else f"{model.base_model_prefix}."  # headless: no prefix
    for layer in range(config.num_hidden_layers):
        p = f"{prefix}layers.{layer}"
        per_head = scores.attention[layer].view(heads, old_head_dim)
        att = torch.cat([top_sorted(per_head[h], head_dim) + h * old_head_dim for h in range(heads)])
        ffn = top_sorted(scores.ffn[layer], intermediate)
        for proj in ("q_proj", "k_proj", "v_proj"):
            new[f"{p}.attention.{proj}.weight"] = state[f"{p}.attention.{proj}.weight"][att][:, res]
            new[f"{p}.attention.{proj}.bias"] = state[f"{p}.attention.{proj}.bias"][att]
        new[f"{p}.attention.o_proj.weight"] = state[f"{p}.attention.o_proj.weight"][res][:, att]
        new[f"{p}.attention.o_proj.bias"] = state[f"{p}.attention.o_proj.bias"][res]
        new[f"{p}.mlp.fc1.weight"] = state[f"{p}.mlp.fc1.weight"][ffn][:, res]
        new[f"{p}.mlp.fc1.bias"] = state[f"{p}.mlp.fc1.bias"][ffn]
        new[f"{p}.mlp.fc2.weight"] = state[f"{p}.mlp.fc2.weight"][res][:, ffn]
        new[f"{p}.mlp.fc2.bias"] = state[f"{p}.mlp.fc2.bias"][res]
    reduced_config = type(config)(**{**config.to_dict(), "hidden_size": hidden, "head_dim": head_dim,
                                     "intermediate_size": intermediate})
    reduced = type(model)(reduced_config).double().eval()
    reduced.load_state_dict(new)
    for layer in reduced.base_model.layers:
        layer.attention.scaling = old_head_dim**-0.5
    return reduced


@pytest.mark.parametrize("cls, make_config", [
    (ViTForImageClassification, vit_config),
    (DeiTForImageClassification, deit_config),
    (DeiTForImageClassificationWithTeacher, deit_config),
    (ViTModel, vit_config),
    (DeiTModel, deit_config),
])
def test_pruning_without_merging_equals_physical_removal(cls, make_config):
    model = randomize(cls(make_config())).double()
    scores = random_scores(model.config)
    small = UPPruner(model).prune(PruningTarget(hidden_size=11, num_attention_heads=4, intermediate_size=13,
                                                head_dim=3), scores)
    assert type(small) is cls
    assert (small.config.hidden_size, small.config.head_dim, small.config.intermediate_size) == (11, 3, 13)
    reference = physically_reduced(model, scores, hidden=11, head_dim=3, intermediate=13)
    x = image_batches(model.config)[0]["pixel_values"].double()
    with torch.no_grad():
        mine, want = small(pixel_values=x), reference(pixel_values=x)
    names = ("last_hidden_state", "pooler_output") if "logits" not in want else ("logits",)
    for name in names:  # headless models: the hidden states and the pooler's values, not just their shapes
        torch.testing.assert_close(mine[name], want[name], rtol=1e-10, atol=1e-10)


def test_merged_heads_hold_the_top_dims_of_their_group():
    model = randomize(ViTForImageClassification(vit_config(hidden_size=16, num_attention_heads=4)))
    scores = random_scores(model.config, seed=3)
    small = UPPruner(model).prune(PruningTarget(hidden_size=12, num_attention_heads=2, intermediate_size=24,
                                                head_dim=5), scores)
    assert (small.config.num_attention_heads, small.config.head_dim) == (2, 5)
    res = top_sorted(scores.residual, 12)
    for layer in range(2):
        groups = scores.attention[layer].view(2, 8)  # two merged groups of two 4-dim heads
        kept = torch.cat([top_sorted(groups[g], 5) + 8 * g for g in range(2)])
        old, new = model.vit.layers[layer].attention, small.vit.layers[layer].attention
        fold = math.sqrt(5 / 4)
        torch.testing.assert_close(new.q_proj.weight, old.q_proj.weight[kept][:, res] * fold)
        torch.testing.assert_close(new.q_proj.bias, old.q_proj.bias[kept] * fold)
        torch.testing.assert_close(new.k_proj.weight, old.k_proj.weight[kept][:, res])
        torch.testing.assert_close(new.v_proj.bias, old.v_proj.bias[kept])
        torch.testing.assert_close(new.o_proj.weight, old.o_proj.weight[res][:, kept])


def test_original_model_is_untouched_and_record_is_kept():
    model = randomize(ViTForImageClassification(vit_config()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = UPPruner(model).score(image_batches(model.config), show_progress=False)
    small = UPPruner(model).prune(PruningTarget.from_ratio(model.config, 0.5), scores)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    record = small.config.upvit_pruning
    assert record["original"]["hidden_size"] == 16 and record["pruned"]["hidden_size"] == 8
    assert record["method"] == "kl" and record["proxy_size"] == 5


def test_from_ratio_gives_the_deit_small_shape():
    config = vit_config(hidden_size=768, num_attention_heads=12, intermediate_size=3072)
    target = PruningTarget.from_ratio(config, 0.5)
    assert target == PruningTarget(hidden_size=384, num_attention_heads=6, intermediate_size=1536)
    assert target.resolve(adapter_for(ViTModel(vit_config())).read_widths(config)).head_dim == 64
    assert PruningTarget.from_ratio(config, 0.25).num_attention_heads == 3


FRESH_LOAD = textwrap.dedent("""
    import sys, torch
    from transformers import AutoModelForImageClassification
    model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
    x = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.save(model(pixel_values=x).logits, sys.argv[3])
    assert "upvit_hf" not in sys.modules
    print(type(model).__name__)
""")


@pytest.mark.parametrize("cls, make_config", [
    (ViTForImageClassification, vit_config),
    (DeiTForImageClassificationWithTeacher, deit_config),
])
def test_pruned_model_reloads_in_a_fresh_interpreter(tmp_path, cls, make_config):
    model = randomize(cls(make_config()))
    pruner = UPPruner(model)
    small = pruner.prune(PruningTarget(hidden_size=8, num_attention_heads=2, intermediate_size=12),
                         pruner.score(image_batches(model.config), show_progress=False))
    small.save_pretrained(tmp_path / "model")
    x = image_batches(model.config)[0]["pixel_values"]
    torch.save(x, tmp_path / "x.pt")
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(tmp_path / "model"), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == cls.__name__
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), small(pixel_values=x).logits, rtol=0, atol=0)


@pytest.mark.parametrize("cls, make_config", [
    (ViTForImageClassification, vit_config), (ViTModel, vit_config), (DeiTModel, deit_config),
    (DeiTForImageClassification, deit_config), (DeiTForImageClassificationWithTeacher, deit_config),
])
def test_headless_and_headed_models_prune_to_their_class(cls, make_config):
    model = randomize(cls(make_config()))
    small = UPPruner(model).prune(PruningTarget(8, 2, 12), random_scores(model.config))
    assert type(small) is cls and small.config.hidden_size == 8  # values: test_pruning_without_merging_...


def test_scores_save_and_load_round_trip(tmp_path):
    scores = random_scores(vit_config())
    scores.meta = {"method": "kl", "proxy_size": 7}
    scores.save(tmp_path / "scores.safetensors")
    loaded = ImportanceScores.load(tmp_path / "scores.safetensors")
    assert loaded.meta == scores.meta
    assert torch.equal(loaded.residual, scores.residual)
    assert all(torch.equal(a, b) for a, b in zip(loaded.attention + loaded.ffn, scores.attention + scores.ffn))
    assert [p.name for p in tmp_path.iterdir()] == ["scores.safetensors"]


# ---------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def vit():
    return randomize(ViTForImageClassification(vit_config()))


@pytest.mark.parametrize("target, message", [
    (PruningTarget(8, 3, 12), "must divide"),
    (PruningTarget(0, 2, 12), "positive"),
    (PruningTarget(8, 2, -1), "positive"),
    (PruningTarget(17, 2, 12), "exceeds"),
    (PruningTarget(8, 2, 25), "exceeds"),
    (PruningTarget(8, 2, 12, head_dim=9), "head_dim"),
    (PruningTarget(8, 8, 12), "must divide"),
])
def test_bad_targets_raise(vit, target, message):
    with pytest.raises(ValueError, match=message):
        UPPruner(vit).prune(target, random_scores(vit.config))


def test_scores_for_another_model_raise(vit):
    other = random_scores(vit_config(hidden_size=24, intermediate_size=30))
    with pytest.raises(ValueError, match="do not match"):
        UPPruner(vit).prune(PruningTarget(8, 2, 12), other)


def test_bad_proxy_sets_raise(vit):
    pruner = UPPruner(vit)
    with pytest.raises(ValueError, match="empty"):
        pruner.score([], show_progress=False)
    with pytest.raises(ValueError, match="missing pixel_values"):
        pruner.score([{"input_ids": torch.zeros(1, 3, dtype=torch.long)}], show_progress=False)
    with pytest.raises(ValueError, match="dicts"):
        pruner.score([torch.zeros(1, 3, 8, 8)], show_progress=False)
    with pytest.raises(ValueError, match="unknown scoring method"):
        pruner.score(image_batches(vit.config), method="taylor")
    with pytest.raises(ValueError, match="headless"):
        UPPruner(ViTModel(vit_config())).score(image_batches(vit.config), show_progress=False)


def test_unsupported_models_raise():
    model = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8))
    with pytest.raises(ValueError, match="not supported.*ViTForImageClassification"):
        UPPruner(model)
    with pytest.raises(ValueError, match="ratio"):
        PruningTarget.from_ratio(vit_config(), 1.5)


@pytest.mark.parametrize("cls, make_config", [
    (ViTForImageClassification, vit_config), (DeiTForImageClassificationWithTeacher, deit_config),
])
def test_adapter_pieces_compose_to_the_model(cls, make_config):
    model = randomize(cls(make_config()))
    adapter = adapter_for(model)
    x = image_batches(model.config)[0]["pixel_values"]
    with torch.no_grad():
        hidden, context = adapter.embed({"pixel_values": x})
        for branch in adapter.branches():
            hidden = branch(hidden, context)
        torch.testing.assert_close(adapter.readout(hidden, context), model(pixel_values=x).logits)


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    from upvit_hf.atomic import atomic_path

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "file.txt") as tmp:
            tmp.write_text("x")
        with atomic_path(tmp_path / "folder", directory=True) as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(umask)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "folder"]
