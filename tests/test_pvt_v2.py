"""PVTv2: every KL score equals the KL of a physically reduced copy (float64), pruning without merging is
physical removal, pruned and depth-pruned models are stock and reload without upvit_hf, bad targets raise.

The reference is a float64 PVTv2 forward written here from the state dict alone: it reads every width off
the tensors, so it also runs copies whose residual width no longer matches the attention width (which a
stock PVTv2 cannot express) and copies with blocks skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tiny import image_batches, pvt_v2_config, randomize
from transformers import PvtV2Backbone, PvtV2Config, PvtV2ForImageClassification

from upvit_hf import BlockScores, ImportanceScores, PruningTarget, UPPruner
from upvit_hf.depth import BlockUnit, least_important_unit, remove_unit

# ------------------------------------------------------------------ the reference forward


def reference_logits(state, config, pixels, scales=None, skip=()):
    """Logits of PVTv2 `state` on `pixels` in float64. `scales[layer]` overrides the attention scale;
    `skip` holds (layer, half) residual branches to leave out (half 0 attention, 1 FFN)."""
    w = {k: v.double() for k, v in state.items()}
    norm = lambda x, p: F.layer_norm(x, x.shape[-1:], w[p + ".weight"], w[p + ".bias"], config.layer_norm_eps)  # noqa: E731
    linear = lambda x, p: F.linear(x, w[p + ".weight"], w.get(p + ".bias"))  # noqa: E731
    hidden, layer = pixels.double(), 0
    for s in range(config.num_encoder_blocks):
        p = f"pvt_v2.encoder.layers.{s}"
        k = config.patch_sizes[s]
        hidden = F.conv2d(hidden, w[f"{p}.patch_embedding.proj.weight"], w[f"{p}.patch_embedding.proj.bias"],
                          stride=config.strides[s], padding=k // 2)
        batch, _, height, width = hidden.shape
        x = norm(hidden.flatten(2).transpose(1, 2), f"{p}.patch_embedding.layer_norm")
        j = 0
        while f"{p}.blocks.{j}.layer_norm_1.weight" in w:
            b = f"{p}.blocks.{j}"
            if (layer, 0) not in skip:
                y = norm(x, f"{b}.layer_norm_1")
                q = linear(y, f"{b}.attention.query")
                kv = y
                image = y.transpose(1, 2).reshape(batch, -1, height, width)
                if config.linear_attention:
                    kv = F.conv2d(F.adaptive_avg_pool2d(image, 7), w[f"{b}.attention.spatial_reduction.weight"],
                                  w[f"{b}.attention.spatial_reduction.bias"])
                    kv = F.gelu(norm(kv.flatten(2).transpose(1, 2), f"{b}.attention.layer_norm"))
                elif config.sr_ratios[s] > 1:
                    r = config.sr_ratios[s]
                    kv = F.conv2d(image, w[f"{b}.attention.spatial_reduction.weight"],
                                  w[f"{b}.attention.spatial_reduction.bias"], stride=r)
                    kv = norm(kv.flatten(2).transpose(1, 2), f"{b}.attention.layer_norm")
                key, value = linear(kv, f"{b}.attention.key"), linear(kv, f"{b}.attention.value")
                heads = config.num_attention_heads[s]
                split = lambda t: t.view(batch, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
                head_size = q.shape[-1] // heads
                scale = scales[layer] if scales else head_size**-0.5
                attn = torch.softmax(split(q) @ split(key).transpose(-1, -2) * scale, -1)
                context = (attn @ split(value)).transpose(1, 2).reshape(batch, x.shape[1], -1)
                x = x + linear(context, f"{b}.attention.proj")
            if (layer, 1) not in skip:
                y = linear(norm(x, f"{b}.layer_norm_2"), f"{b}.mlp.dense1")
                if config.linear_attention:
                    y = F.relu(y)
                ffn = y.shape[-1]
                y = F.conv2d(y.transpose(1, 2).reshape(batch, ffn, height, width), w[f"{b}.mlp.dwconv.dwconv.weight"],
                             w[f"{b}.mlp.dwconv.dwconv.bias"], padding=1, groups=ffn)
                x = x + linear(F.gelu(y.flatten(2).transpose(1, 2)), f"{b}.mlp.dense2")
            j, layer = j + 1, layer + 1
        x = norm(x, f"{p}.layer_norm")
        hidden = x.transpose(1, 2).reshape(batch, -1, height, width)
    return linear(hidden.flatten(2).mean(-1), "classifier")


def kl_sum(state, reference_state, config, batches, **kwargs) -> float:
    total = 0.0
    for batch in batches:
        q = torch.log_softmax(reference_logits(reference_state, config, batch["pixel_values"]), -1)
        p = torch.log_softmax(reference_logits(state, config, batch["pixel_values"], **kwargs), -1)
        total += float((q.exp() * (q - p)).sum())
    return total


# Which axes of a stage's tensors are that stage's residual axis; written independently of the library.
STAGE_RESIDUAL_AXES = {
    "patch_embedding.proj.weight": (0,), "patch_embedding.proj.bias": (0,), "layer_norm": (0,),
    "attention.query.weight": (1,), "attention.key.weight": (1,), "attention.value.weight": (1,),
    "attention.proj.weight": (0,), "attention.proj.bias": (0,), "mlp.dense1.weight": (1,),
    "mlp.dense2.weight": (0,), "mlp.dense2.bias": (0,),
    "attention.spatial_reduction.weight": (0, 1), "attention.spatial_reduction.bias": (0,),
}


def residual_axes(key: str, stage: int, num_stages: int) -> tuple[int, ...]:
    prefix = f"pvt_v2.encoder.layers.{stage}."
    if key.startswith(prefix):
        rest = key[len(prefix):]
        if rest.endswith(("layer_norm.weight", "layer_norm.bias", "layer_norm_1.weight", "layer_norm_1.bias",
                          "layer_norm_2.weight", "layer_norm_2.bias")):
            return (0,)
        return next((axes for suffix, axes in STAGE_RESIDUAL_AXES.items() if rest.endswith(suffix)), ())
    following = f"pvt_v2.encoder.layers.{stage + 1}.patch_embedding.proj.weight"
    if key == following or (stage == num_stages - 1 and key == "classifier.weight"):
        return (1,)
    return ()


def keep_residual(state, stage: int, kept: torch.Tensor, num_stages: int):
    out = {}
    for key, tensor in state.items():
        for axis in residual_axes(key, stage, num_stages):
            tensor = tensor.index_select(axis, kept)
        out[key] = tensor
    return out


def block_prefixes(config):
    return [f"pvt_v2.encoder.layers.{s}.blocks.{j}" for s in range(config.num_encoder_blocks)
            for j in range(config.depths[s])]


def keep_ffn(state, block: str, kept: torch.Tensor):
    out = dict(state)
    for name, axis in (("dense1.weight", 0), ("dense1.bias", 0), ("dwconv.dwconv.weight", 0),
                       ("dwconv.dwconv.bias", 0), ("dense2.weight", 1)):
        out[f"{block}.mlp.{name}"] = state[f"{block}.mlp.{name}"].index_select(axis, kept)
    return out


def without(width: int, channel: int) -> torch.Tensor:
    return torch.tensor([c for c in range(width) if c != channel])


def tiny(seed=0, **overrides):
    return randomize(PvtV2ForImageClassification(pvt_v2_config(**overrides)), seed=seed).double()


CONFIGS = [pytest.param({}, id="sr-2-and-1"), pytest.param({"linear_attention": True}, id="linear-attention")]


# ------------------------------------------------------------------ scoring


@pytest.mark.parametrize("overrides", CONFIGS)
def test_reference_forward_is_the_stock_model(overrides):
    model = tiny(**overrides)
    x = image_batches(model.config)[0]["pixel_values"].double()
    torch.testing.assert_close(reference_logits(model.state_dict(), model.config, x),
                               model(pixel_values=x).logits, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("overrides", CONFIGS)
def test_float64_scores_equal_physical_removal(overrides):
    model = tiny(**overrides)
    config, state = model.config, model.state_dict()
    batches = image_batches(config)
    scores = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
    assert isinstance(scores.residual, list) and [len(r) for r in scores.residual] == config.hidden_sizes

    for stage, width in enumerate(config.hidden_sizes):
        want = [kl_sum(keep_residual(state, stage, without(width, c), 2), state, config, batches) for c in range(width)]
        torch.testing.assert_close(scores.residual[stage], torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
    for layer, block in enumerate(block_prefixes(config)):
        width = scores.attention[layer].numel()
        want = []
        for i in range(width):  # removed attention dims are zero in q, k and v (the authors' masking)
            zeroed = dict(state)
            for proj in ("query", "key", "value"):
                for kind in ("weight", "bias"):
                    name = f"{block}.attention.{proj}.{kind}"
                    zeroed[name] = state[name].clone().index_fill_(0, torch.tensor([i]), 0.0)
            want.append(kl_sum(zeroed, state, config, batches))
        torch.testing.assert_close(scores.attention[layer], torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
        ffn = scores.ffn[layer].numel()
        want = [kl_sum(keep_ffn(state, block, without(ffn, j)), state, config, batches) for j in range(ffn)]
        torch.testing.assert_close(scores.ffn[layer], torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)


def test_float32_scores_match_float64_reference():
    model = tiny().float()
    scores = UPPruner(model).score(image_batches(model.config), variants_per_pass=7, show_progress=False)
    exact = UPPruner(model.double()).score(image_batches(model.config), show_progress=False)
    for got, want in zip(scores.residual + scores.ffn, exact.residual + exact.ffn):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-7)


# ------------------------------------------------------------------ width pruning


def random_scores(model, seed=0) -> ImportanceScores:
    g = torch.Generator().manual_seed(seed)
    config = model.config
    draw = lambda n: torch.rand(n, generator=g, dtype=torch.float64)  # noqa: E731
    layers = [s for s in range(config.num_encoder_blocks) for _ in range(config.depths[s])]
    return ImportanceScores(
        residual=[draw(h) for h in config.hidden_sizes],
        attention=[draw(config.hidden_sizes[s]) for s in layers],
        ffn=[draw(config.hidden_sizes[s] * config.mlp_ratios[s]) for s in layers],
    )


def top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(scores, descending=True)[:k].sort().values


@pytest.mark.parametrize("overrides", CONFIGS)
def test_pruning_without_merging_equals_physical_removal(overrides):
    model = tiny(**overrides)
    config = model.config
    scores = random_scores(model)
    hidden, heads, ffn = (4, 6), (2, 3), (8, 12)  # every head keeps 2 of its 4 dims
    pruned = UPPruner(model).prune(PruningTarget(hidden, heads, ffn), scores)
    assert type(pruned) is PvtV2ForImageClassification
    assert list(pruned.config.hidden_sizes) == [4, 6] and list(pruned.config.mlp_ratios) == [2, 2]
    for block, h in zip(pruned.pvt_v2.encoder.layers, hidden):
        assert int(h * pruned.config.mlp_ratios[0]) == block.blocks[0].mlp.dense1.out_features

    state = model.state_dict()
    for stage in range(2):
        state = keep_residual(state, stage, top(scores.residual[stage], hidden[stage]), 2)
    layers = [s for s in range(2) for _ in range(config.depths[s])]
    for layer, (block, stage) in enumerate(zip(block_prefixes(config), layers)):
        old_head = config.hidden_sizes[stage] // config.num_attention_heads[stage]
        per_head = scores.attention[layer].view(heads[stage], old_head)
        dims = torch.cat([top(per_head[h], hidden[stage] // heads[stage]) + h * old_head for h in range(heads[stage])])
        for proj in ("query", "key", "value"):
            state[f"{block}.attention.{proj}.weight"] = state[f"{block}.attention.{proj}.weight"][dims]
            state[f"{block}.attention.{proj}.bias"] = state[f"{block}.attention.{proj}.bias"][dims]
        state[f"{block}.attention.proj.weight"] = state[f"{block}.attention.proj.weight"][:, dims]
        state = keep_ffn(state, block, top(scores.ffn[layer], ffn[stage]))
    scales = [(config.hidden_sizes[s] // config.num_attention_heads[s]) ** -0.5 for s in layers]  # no constant changed
    for batch in image_batches(config):
        x = batch["pixel_values"].double()
        torch.testing.assert_close(pruned(pixel_values=x).logits, reference_logits(state, config, x, scales=scales),
                                   rtol=1e-9, atol=1e-10)


def test_from_ratio_keeps_integer_mlp_ratios_and_b2_halves_to_the_b0_widths():
    b2 = PvtV2Config(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], num_attention_heads=[1, 2, 5, 8],
                     mlp_ratios=[8, 8, 4, 4])
    target = PruningTarget.from_ratio(b2, 0.5)
    assert target.hidden_size == (32, 64, 160, 256)  # the PVTv2-B0 widths
    assert target.intermediate_size == (256, 512, 640, 1024)
    model = tiny()
    pruned = UPPruner(model).prune(PruningTarget.from_ratio(model.config, 0.5), random_scores(model))
    for stage, block in enumerate(pruned.pvt_v2.encoder.layers):
        h = pruned.config.hidden_sizes[stage]
        assert isinstance(pruned.config.mlp_ratios[stage], int)
        assert int(h * pruned.config.mlp_ratios[stage]) == block.blocks[0].mlp.dense1.out_features == 2 * h
        assert block.blocks[0].mlp.dwconv.dwconv.groups == 2 * h


@pytest.mark.parametrize("target, message", [
    (PruningTarget((7, 6), (2, 3), (14, 12)), "ties the attention width"),  # 7 does not fit 2 heads
    (PruningTarget((4, 6), (2, 3), (8, 12), head_dim=(1, 2)), "ties the attention width"),
    (PruningTarget((4, 6, 6), (2, 3, 3), (8, 12, 12)), "has 3 entries but the model has 2 stage"),
    (PruningTarget((4, 6), (2, 3), (9, 12)), "must be a multiple of hidden_size"),
    (PruningTarget((4, 6), (3, 3), (8, 12)), "stage 0: num_attention_heads=3 must divide"),
    (PruningTarget((4, 16), (2, 3), (8, 12)), "stage 1: hidden_size=16 exceeds"),
])
def test_bad_targets_raise(target, message):
    pruner = UPPruner(tiny())
    with pytest.raises(ValueError, match=message):
        pruner.check_target(target)


def test_fisher_and_refinement_refuse_hierarchical_models():
    model = tiny()
    batches = image_batches(model.config)
    with pytest.raises(ValueError, match="Fisher scoring does not support hierarchical models"):
        UPPruner(model).score(batches, method="fisher")
    with pytest.raises(ValueError, match="refinement does not support hierarchical models"):
        UPPruner(model).refine(random_scores(model), PruningTarget((4, 6), (2, 3), (8, 12)), batches)


def test_scores_of_another_shape_raise():
    model = tiny()
    scores = random_scores(model)
    with pytest.raises(ValueError, match="residual scores for 1 stage"):
        UPPruner(model).prune(PruningTarget((4, 6), (2, 3), (8, 12)),
                              ImportanceScores(scores.residual[0], scores.attention, scores.ffn))


def test_staged_scores_round_trip_and_files_of_the_one_stage_format_still_load(tmp_path):
    scores = random_scores(tiny())
    scores.save(tmp_path / "pvt.safetensors")
    loaded = ImportanceScores.load(tmp_path / "pvt.safetensors")
    assert len(loaded.residual) == 2
    for got, want in zip(loaded.residual + loaded.attention + loaded.ffn, scores.residual + scores.attention + scores.ffn):
        assert torch.equal(got, want)
    # a file in the format written before stages existed: one "residual" tensor, per-layer tensors
    old = {"residual": torch.arange(4.0), "attention.0": torch.ones(4), "ffn.0": torch.zeros(6)}
    save_file(old, str(tmp_path / "old.safetensors"), metadata={"upvit_meta": '{"method": "kl"}'})
    plain = ImportanceScores.load(tmp_path / "old.safetensors")
    assert torch.is_tensor(plain.residual) and torch.equal(plain.residual, old["residual"])
    assert plain.meta == {"method": "kl"} and plain.num_layers == 1


def test_backbone_prunes_like_the_classifier_backbone():
    model = tiny()
    backbone = PvtV2Backbone(model.config).double().eval()
    backbone.load_state_dict({k[len("pvt_v2."):]: v for k, v in model.state_dict().items() if k.startswith("pvt_v2.")})
    scores, target = random_scores(model), PruningTarget((4, 6), (1, 3), (8, 12))
    small_backbone = UPPruner(backbone).prune(target, scores)
    small = UPPruner(model).prune(target, scores)
    x = image_batches(model.config)[0]["pixel_values"].double()
    assert type(small_backbone) is PvtV2Backbone
    torch.testing.assert_close(small_backbone(pixel_values=x).feature_maps[-1],
                               small.pvt_v2(pixel_values=x).last_hidden_state, rtol=0, atol=0)
    with pytest.raises(ValueError, match="headless"):
        UPPruner(backbone).score(image_batches(model.config))


# ------------------------------------------------------------------ depth


def test_block_scores_equal_skipped_branches_and_never_cross_a_stage():
    model = tiny(depths=[3, 2])
    config, state = model.config, model.state_dict()
    batches = image_batches(config)
    scores = UPPruner(model).score_blocks(batches, variants_per_pass=2, show_progress=False)
    for layer in range(5):
        want = kl_sum(state, state, config, batches, skip={(layer, 0), (layer, 1)})
        torch.testing.assert_close(scores.block[layer], torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-12)
    for layer in range(4):  # hybrid 2: FFN of stage 0's last block + attention of stage 1's first
        want = kl_sum(state, state, config, batches, skip={(layer, 1), (layer + 1, 0)})
        torch.testing.assert_close(scores.hybrid[layer], torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-12)
    # the cross-stage hybrid is never removed, even when it scores lowest
    rigged = BlockScores(scores.block + 1, torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    unit = least_important_unit(rigged, UPPruner(model).adapter.widths, [1, 1])
    assert (unit.kind, unit.layer) == ("hybrid", 0)
    with pytest.raises(ValueError, match="spans stages 0 and 1"):
        remove_unit(UPPruner(model).adapter, BlockUnit.hybrid(2))


def test_depth_pruning_removes_units_within_stages_and_computes_the_skipped_model():
    model = tiny(depths=[3, 2])
    config, state = model.config, model.state_dict()
    batches = image_batches(config)
    pruner = UPPruner(model)
    one = pruner.prune_blocks(batches, num_hidden_layers=4, show_progress=False)
    assert type(one) is PvtV2ForImageClassification and sum(one.config.depths) == 4
    removed = one.config.upvit_pruning["steps"][-1]["removed"][0]
    first = removed["layers"][0]
    skip = {(first, 0), (first, 1)} if removed["unit"] == "block" else {(first, 1), (first + 1, 0)}
    x = batches[0]["pixel_values"].double()
    torch.testing.assert_close(one(pixel_values=x).logits, reference_logits(state, config, x, skip=skip),
                               rtol=1e-9, atol=1e-10)
    per_stage = pruner.prune_blocks(batches, num_hidden_layers=(1, 1), show_progress=False)
    assert list(per_stage.config.depths) == [1, 1]
    with pytest.raises(ValueError, match="one depth per stage"):
        pruner.prune_blocks(batches, num_hidden_layers=(1, 1, 1))
    with pytest.raises(ValueError, match="from 2 to the model's 5"):
        pruner.prune_blocks(batches, num_hidden_layers=1)


def test_pruned_models_reload_in_a_fresh_interpreter(tmp_path):
    model = tiny(depths=[2, 2]).float()
    batches = image_batches(model.config)
    pruner = UPPruner(model)
    widths = pruner.prune(PruningTarget.from_ratio(model.config, 0.5), pruner.score(batches, show_progress=False))
    depth = UPPruner(widths).prune_blocks(batches, num_hidden_layers=(1, 2), show_progress=False)
    x = batches[0]["pixel_values"]
    for name, pruned in (("widths", widths), ("depth", depth)):
        pruned.save_pretrained(tmp_path / name)
        torch.save(x, tmp_path / "x.pt")
        expected = pruned(pixel_values=x).logits.detach()
        script = textwrap.dedent(f"""
            import sys, torch
            from transformers import AutoModelForImageClassification
            model = AutoModelForImageClassification.from_pretrained({str(tmp_path / name)!r}).eval()
            assert type(model).__name__ == "PvtV2ForImageClassification", type(model)
            assert not any(m.startswith("upvit_hf") for m in sys.modules)
            with torch.no_grad():
                torch.save(model(pixel_values=torch.load({str(tmp_path / 'x.pt')!r})).logits, {str(tmp_path / 'out.pt')!r})
        """)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
        assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


# ------------------------------------------------------------------ command line


def test_cli_scores_prunes_evaluates_and_writes_a_card(tmp_path, capsys):
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage
    from transformers import AutoImageProcessor, AutoModelForImageClassification, PvtImageProcessorPil

    from upvit_hf.cli import main

    tiny(depths=[2, 2]).float().save_pretrained(tmp_path / "base")
    PvtImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(tmp_path / "base")
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)) for _ in range(8)]
    features = Features({"image": Image(), "label": ClassLabel(num_classes=5)})
    data = Dataset.from_dict({"image": images, "label": [i % 5 for i in range(8)]}, features=features)
    DatasetDict(train=data, test=data).save_to_disk(tmp_path / "data")

    main(["score", "--model", str(tmp_path / "base"), "--dataset", str(tmp_path / "data"), "--proxy-size", "6",
          "--batch-size", "3", "--output", str(tmp_path / "s.safetensors")])
    assert [len(r) for r in ImportanceScores.load(tmp_path / "s.safetensors").residual] == [8, 12]
    main(["prune", "--model", str(tmp_path / "base"), "--scores", str(tmp_path / "s.safetensors"),
          "--hidden-size", "4,6", "--num-heads", "2,3", "--intermediate-size", "8,12", "--output", str(tmp_path / "thin")])
    main(["prune", "--model", str(tmp_path / "thin"), "--dataset", str(tmp_path / "data"), "--proxy-size", "6",
          "--num-layers", "1,2", "--output", str(tmp_path / "pruned")])
    pruned = AutoModelForImageClassification.from_pretrained(tmp_path / "pruned")
    assert type(pruned) is PvtV2ForImageClassification
    assert list(pruned.config.hidden_sizes) == [4, 6] and list(pruned.config.depths) == [1, 2]
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "pruned")).__name__.startswith("PvtImageProcessor")
    card = (tmp_path / "thin" / "README.md").read_text()
    assert "| 8 / 12 | 4 / 6 |" in card
    main(["evaluate", "--model", str(tmp_path / "pruned"), "--dataset", str(tmp_path / "data"), "--split", "test",
          "--output", str(tmp_path / "eval.json")])
    assert (tmp_path / "eval.json").exists()
    main(["distill", "--student", str(tmp_path / "pruned"), "--teacher", str(tmp_path / "base"), "--dataset",
          str(tmp_path / "data"), "--eval_split", "test", "--output_dir", str(tmp_path / "distilled"), "--max_steps", "2",
          "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no", "--use_cpu",
          "--cutmix_alpha", "0"])
    distilled = AutoModelForImageClassification.from_pretrained(tmp_path / "distilled")
    assert type(distilled) is PvtV2ForImageClassification
    assert not torch.equal(distilled.classifier.weight, pruned.classifier.weight)
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "--model", str(tmp_path / "base"), "--scores", str(tmp_path / "s.safetensors"),
              "--hidden-size", "4,6,6", "--num-heads", "2,3,3", "--intermediate-size", "8,12,12",
              "--output", str(tmp_path / "bad")])
    assert exit_info.value.code == 2 and "stage" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
