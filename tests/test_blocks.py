"""Progressive block pruning: block / hybrid KL scores and depth surgery against hand-reduced float64 copies,
stock reload in a fresh interpreter, `between_steps`, composition with width pruning, bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
from helpers import kl_sum, model_logits
from tiny import deit_config, gpt2_config, image_batches, randomize, token_batches, vit_config
from torch import nn
from transformers import (
    DeiTForImageClassificationWithTeacher,
    GPT2LMHeadModel,
    GPT2Model,
    ViTForImageClassification,
    ViTModel,
)

from upvit_hf import PruningTarget, UPPruner
from upvit_hf.scores import BlockScores
from upvit_hf.scoring.blocks import branch_evaluations



# ---------------------------------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """What the test itself knows about a family, written independently of the library's adapters."""

    cls: type
    make_config: object
    layers: str  # attribute of model.base_model holding the blocks
    attention_half: tuple[str, ...]  # block submodules forming the attention half
    ffn_half: tuple[str, ...]
    language_model: bool

    def model(self, num_layers: int = 3, **overrides) -> nn.Module:
        key = "n_layer" if self.language_model else "num_hidden_layers"
        model = self.cls(self.make_config(**{key: num_layers, **overrides}))
        return randomize(model)

    def batches(self, config):
        return token_batches(config) if self.language_model else image_batches(config)


VIT = Family(ViTForImageClassification, vit_config, "layers", ("layernorm_before", "attention"),
             ("layernorm_after", "mlp"), False)
DEIT = Family(DeiTForImageClassificationWithTeacher, deit_config, "layers", ("layernorm_before", "attention"),
              ("layernorm_after", "mlp"), False)
GPT2 = Family(GPT2LMHeadModel, gpt2_config, "h", ("ln_1", "attn"), ("ln_2", "mlp"), True)

FAMILIES = [
    pytest.param(VIT, {}, id="vit"),
    pytest.param(DEIT, {}, id="deit-with-teacher"),
    pytest.param(GPT2, {}, id="gpt2"),
    pytest.param(GPT2, {"scale_attn_by_inverse_layer_idx": True}, id="gpt2-inverse-layer-idx"),
]


# ---------------------------------------------------------------------------------------- hand-reduced copies
def without_block(family: Family, model, layer: int):
    """A float64 copy whose block list lacks block `layer` (every other module as it was)."""
    reduced = copy.deepcopy(model).double().eval()
    blocks = getattr(reduced.base_model, family.layers)
    setattr(reduced.base_model, family.layers, nn.ModuleList([b for i, b in enumerate(blocks) if i != layer]))
    return reduced


def without_hybrid(family: Family, model, layer: int):
    """A float64 copy where block `layer` keeps its attention half and takes the FFN half of block
    `layer + 1`, which is dropped: the FFN of `layer` and the attention of `layer + 1` are gone."""
    reduced = copy.deepcopy(model).double().eval()
    blocks = getattr(reduced.base_model, family.layers)
    for name in family.ffn_half:
        setattr(blocks[layer], name, getattr(blocks[layer + 1], name))
    setattr(reduced.base_model, family.layers, nn.ModuleList([b for i, b in enumerate(blocks) if i != layer + 1]))
    return reduced


def reference_scores(family: Family, model, batches):
    original = copy.deepcopy(model).double().eval()
    num_layers = len(getattr(model.base_model, family.layers))
    block = [kl_sum(original, without_block(family, model, i), batches) for i in range(num_layers)]
    hybrid = [kl_sum(original, without_hybrid(family, model, i), batches) for i in range(num_layers - 1)]
    return torch.tensor(block, dtype=torch.float64), torch.tensor(hybrid, dtype=torch.float64)


def hand_reduced(family: Family, model, kind: str, layer: int):
    return (without_block if kind == "block" else without_hybrid)(family, model, layer)


# ---------------------------------------------------------------------------------------- scores
@pytest.mark.parametrize("family, overrides", FAMILIES)
def test_scores_equal_hand_reduced_copies_and_one_step_removes_the_least_important(family, overrides):
    model = family.model(3, **overrides).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = family.batches(model.config)
    block, hybrid = reference_scores(family, model, batches)

    scores = UPPruner(model).score_blocks(batches, variants_per_pass=2, show_progress=False)
    assert scores.block.dtype == scores.hybrid.dtype == torch.float64
    torch.testing.assert_close(scores.block, block, rtol=1e-9, atol=0)
    torch.testing.assert_close(scores.hybrid, hybrid, rtol=1e-9, atol=0)
    assert scores.meta["method"] == "kl" and scores.meta["proxy_size"] == 5

    # one progressive step removes a unit the independent reference ranks last (within rounding: at a near-tie
    # either unit is a right answer on some CPU), and the model is exactly the hand-reduced copy without it
    small = UPPruner(model).prune_blocks(batches, num_hidden_layers=2, show_progress=False)
    assert type(small) is family.cls and small.config.num_hidden_layers == 2
    assert len(getattr(small.base_model, family.layers)) == 2
    record = small.config.upvit_pruning
    assert record["original"]["num_hidden_layers"] == 3 and record["pruned"]["num_hidden_layers"] == 2
    (step,) = record["steps"]
    assert step["operation"] == "depth" and step["method"] == "kl" and step["proxy_size"] == 5
    ((removed_kind, removed_layers),) = [(r["unit"], r["layers"]) for r in step["removed"]]
    layer = removed_layers[0]
    assert removed_layers == ([layer] if removed_kind == "block" else [layer, layer + 1])
    removed_score = (block if removed_kind == "block" else hybrid)[layer]
    lowest = min(block.min(), hybrid.min())
    assert removed_score <= lowest + 1e-9 * abs(lowest), (removed_kind, layer, block, hybrid)
    reference = hand_reduced(family, model, removed_kind, layer)
    for batch in batches:
        torch.testing.assert_close(model_logits(small, batch), model_logits(reference, batch), rtol=1e-10, atol=1e-10)
    for key, value in model.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key]), key
    assert model.config.num_hidden_layers == 3 and not hasattr(model.config, "upvit_pruning")


def test_variants_per_pass_does_not_change_block_scores():
    model = VIT.model(4).double()
    batches = VIT.batches(model.config)
    one = UPPruner(model).score_blocks(batches, variants_per_pass=1, show_progress=False)
    many = UPPruner(model).score_blocks(batches, variants_per_pass=64, show_progress=False)
    torch.testing.assert_close(one.by_branch(), many.by_branch(), rtol=1e-12, atol=0)


def test_float32_block_scores_match_float64_reference():
    model = GPT2.model(3)
    batches = GPT2.batches(model.config)
    scores = UPPruner(model).score_blocks(batches, show_progress=False)
    block, hybrid = reference_scores(GPT2, model, batches)
    torch.testing.assert_close(scores.block, block, rtol=1e-4, atol=0)
    torch.testing.assert_close(scores.hybrid, hybrid, rtol=1e-4, atol=0)


def test_block_scoring_leaves_model_unchanged_and_in_its_mode():
    model = VIT.model(3, hidden_dropout_prob=0.5).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = VIT.batches(model.config)
    scores = UPPruner(model).score_blocks(batches, show_progress=False)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    again = UPPruner(copy.deepcopy(model).eval()).score_blocks(batches, show_progress=False)
    torch.testing.assert_close(scores.by_branch(), again.by_branch())  # dropout was off


def test_block_scores_save_load_and_least_important(tmp_path):
    scores = BlockScores(torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64),
                         torch.tensor([5.0, 1.0], dtype=torch.float64), meta={"method": "kl", "proxy_size": 4})
    scores.save(tmp_path / "blocks.safetensors")
    loaded = BlockScores.load(tmp_path / "blocks.safetensors")
    assert loaded.meta == scores.meta
    assert torch.equal(loaded.block, scores.block) and torch.equal(loaded.hybrid, scores.hybrid)
    assert [p.name for p in tmp_path.iterdir()] == ["blocks.safetensors"]
    unit = loaded.least_important()  # block 1 and hybrid 1 tie: the earlier unit (block 1) wins
    assert (unit.kind, unit.layers) == ("block", (1,))
    unit = BlockScores(torch.tensor([3.0, 2.0]), torch.tensor([0.5])).least_important()
    assert (unit.kind, unit.layers) == ("hybrid", (0, 1))
    with pytest.raises(ValueError, match=r"\(L,\) and \(L-1,\)"):
        BlockScores(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="block scores"):
        BlockScores.load(_save_other(tmp_path))


def _save_other(tmp_path):
    from safetensors.torch import save_file

    save_file({"residual": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    return tmp_path / "other.safetensors"


def test_scoring_runs_each_suffix_once_about_half_of_naive():
    """Count branch applications (in copies of a batch) while scoring: the cached inputs and stacked
    suffixes give 2L + (2L-1)(L-1) per batch, against 2L + (2L-1)(2L-2) for running each reduced model."""
    model = VIT.model(4)
    batches = VIT.batches(model.config)
    pruner = UPPruner(model)
    applied = []
    stock_branches = pruner.adapter.branches

    def counting_branches():
        def counted(branch):
            def run(hidden, context):
                applied.append(hidden.shape[0])
                return branch(hidden, context)
            return run
        return [counted(branch) for branch in stock_branches()]

    pruner.adapter.branches = counting_branches
    pruner.score_blocks(batches, variants_per_pass=3, show_progress=False)
    rows = sum(len(b["pixel_values"]) for b in batches)
    assert sum(applied) == rows * branch_evaluations(4)[0] == rows * (8 + 7 * 3)
    assert branch_evaluations(4)[1] == 8 + 7 * 6
    assert branch_evaluations(12) == (24 + 23 * 11, 24 + 23 * 22)  # ViT-B / DeiT-B: 277 vs 530
    assert branch_evaluations(1) == (2, 2)


# ---------------------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("family, overrides", FAMILIES)
def test_every_unit_removal_equals_the_hand_reduced_model(family, overrides):
    """Depth surgery for each block and hybrid (including index-dependent attention scales)."""
    from upvit_hf.adapters import adapter_for
    from upvit_hf.depth import BlockUnit, remove_unit

    model = family.model(3, **overrides).double()
    batch = family.batches(model.config)[0]
    units = [BlockUnit.block(i) for i in range(3)] + [BlockUnit.hybrid(i) for i in range(2)]
    for unit in units:
        config, state = remove_unit(adapter_for(model), unit)
        reduced = family.cls(config).double().eval()
        reduced.load_state_dict(state, strict=True)
        reference = hand_reduced(family, model, unit.kind, unit.layer)
        torch.testing.assert_close(model_logits(reduced, batch), model_logits(reference, batch), rtol=1e-10, atol=1e-10,
                                   msg=lambda m, u=unit: f"{u}: {m}")


def test_between_steps_runs_once_per_removal_on_the_current_model():
    model = VIT.model(4)
    batches = VIT.batches(model.config)
    bias = model.classifier.bias.detach().clone()
    calls = []

    def between_steps(current, step):
        calls.append((step, current.config.num_hidden_layers, current))
        current.train()  # e.g. a short distillation: trains in place
        with torch.no_grad():
            current.classifier.bias += 1.0

    proxy = (batch for batch in batches)  # one-shot: must be materialized, every step re-scores
    small = UPPruner(model).prune_blocks(proxy, num_hidden_layers=2, between_steps=between_steps,
                                         show_progress=False)
    assert [(step, depth) for step, depth, _ in calls] == [(0, 3), (1, 2)]
    assert calls[-1][2] is small and calls[0][2] is not model
    torch.testing.assert_close(small.classifier.bias, bias + 2.0)  # the second step pruned the trained model
    assert not small.training  # handed back in the original's mode
    assert [len(step["removed"]) for step in small.config.upvit_pruning["steps"]] == [2]


def test_same_depth_returns_an_unchanged_copy():
    model = VIT.model(2)
    same = UPPruner(model).prune_blocks(VIT.batches(model.config), num_hidden_layers=2, show_progress=False)
    assert same is not model and same.config.num_hidden_layers == 2
    x = VIT.batches(model.config)[0]
    torch.testing.assert_close(model_logits(same, x), model_logits(model, x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- stock reload
FRESH_LOAD = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoModelForCausalLM, AutoModelForImageClassification
    out = {}
    for name, spec in json.loads(sys.argv[1]).items():
        x = torch.load(spec["inputs"])
        if spec["kind"] == "lm":
            model = AutoModelForCausalLM.from_pretrained(spec["path"]).eval()
            with torch.no_grad():
                logits = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
                prompt = x["input_ids"][:, :4]
                gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=6, min_new_tokens=6, use_cache=True, output_logits=True,
                                     return_dict_in_generate=True)
            torch.save({"logits": logits, "generated": gen.sequences, "step_logits": torch.stack(gen.logits, 1)},
                       spec["output"])
        else:
            model = AutoModelForImageClassification.from_pretrained(spec["path"]).eval()
            with torch.no_grad():
                torch.save({"logits": model(pixel_values=x["pixel_values"]).logits}, spec["output"])
        out[name] = [type(model).__name__, model.config.num_hidden_layers]
    assert "upvit_hf" not in sys.modules
    print(json.dumps(out))
""")


def _depth_then_width(family, model, batches):
    """Depth first, then exact KL width scores of the shallower model and width pruning."""
    shallow = UPPruner(model).prune_blocks(batches, num_hidden_layers=2, show_progress=False)
    pruner = UPPruner(shallow)
    return pruner.prune(PruningTarget.from_ratio(shallow.config, 0.5), pruner.score(batches, show_progress=False))


def _width_then_depth(family, model, batches):
    """Width first (magnitude scores keep this test fast), then progressive depth pruning of the thin model."""
    pruner = UPPruner(model)
    thin = pruner.prune(PruningTarget.from_ratio(model.config, 0.5), pruner.score(method="magnitude"))
    return UPPruner(thin).prune_blocks(batches, num_hidden_layers=2, show_progress=False)


def _depth(family, model, batches):
    return UPPruner(model).prune_blocks(batches, num_hidden_layers=2, show_progress=False)


RELOAD_CASES = {
    "vit-depth": (VIT, {}, _depth, ["depth"]),
    "deit-depth": (DEIT, {}, _depth, ["depth"]),
    "gpt2-depth": (GPT2, {"scale_attn_by_inverse_layer_idx": True}, _depth, ["depth"]),
    "vit-width-then-depth": (VIT, {}, _width_then_depth, ["width", "depth"]),
    "gpt2-depth-then-width": (GPT2, {"scale_attn_by_inverse_layer_idx": True}, _depth_then_width, ["depth", "width"]),
}


def test_depth_pruned_models_reload_in_a_fresh_interpreter(tmp_path):
    """Depth pruning alone and composed with width pruning (both orders): stock models that a fresh
    interpreter reloads with stock `from_pretrained`, same logits; GPT-2's greedy KV-cache generation too."""
    specs, pruned = {}, {}
    for name, (family, overrides, prune, operations) in RELOAD_CASES.items():
        model = family.model(3, **overrides)
        batches = family.batches(model.config)
        small = prune(family, model, batches)
        assert type(small) is family.cls
        record = small.config.upvit_pruning
        assert [step["operation"] for step in record["steps"]] == operations, name
        assert record["original"]["num_hidden_layers"] == 3 and record["pruned"]["num_hidden_layers"] == 2
        if "width" in operations:
            assert record["pruned"]["hidden_size"] == model.config.hidden_size // 2
        small.save_pretrained(tmp_path / name)
        torch.save(batches[0], tmp_path / f"{name}.in.pt")
        specs[name] = {"path": str(tmp_path / name), "inputs": str(tmp_path / f"{name}.in.pt"),
                       "output": str(tmp_path / f"{name}.out.pt"), "kind": "lm" if family.language_model else "image"}
        pruned[name] = (family, small, batches[0])

    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, json.dumps(specs)], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    for name, (family, small, batch) in pruned.items():
        assert loaded[name] == [family.cls.__name__, 2], name
        result = torch.load(specs[name]["output"])
        if family.language_model:
            with torch.no_grad():
                expected = small(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                # The KV-cached steps of the fresh interpreter's generation equal a full forward (no cache) of
                # the sequence it generated: layer indices are consistent for the cache. Values, not tokens.
                sequence = result["generated"]
                full = small(input_ids=sequence, use_cache=False).logits[:, 3:-1]
            torch.testing.assert_close(result["step_logits"], full, rtol=1e-5, atol=1e-5,
                                       msg=lambda m, n=name: f"{n}: {m}")
        else:
            expected = model_logits(small, batch)
        torch.testing.assert_close(result["logits"], expected, rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")


# ---------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("layers, message", [(0, "from 1 to the model's 3"), (4, "from 1 to the model's 3"),
                                             (True, "integer"), ("2", "integer"), (2.0, "integer")])
def test_bad_depths_raise(layers, message):
    model = VIT.model(3)
    with pytest.raises(ValueError, match=message):
        UPPruner(model).prune_blocks(VIT.batches(model.config), num_hidden_layers=layers, show_progress=False)


def test_headless_models_and_empty_proxies_raise():
    with pytest.raises(ValueError, match="headless"):
        UPPruner(ViTModel(vit_config())).prune_blocks(image_batches(vit_config()), 1, show_progress=False)
    with pytest.raises(ValueError, match="headless"):
        UPPruner(GPT2Model(gpt2_config())).score_blocks(token_batches(gpt2_config()), show_progress=False)
    with pytest.raises(ValueError, match="empty"):
        UPPruner(VIT.model(2)).prune_blocks([], 1, show_progress=False)
    with pytest.raises(ValueError, match="proxy set"):
        UPPruner(VIT.model(2)).prune_blocks(None, 1, show_progress=False)
    with pytest.raises(ValueError, match="callable"):
        UPPruner(VIT.model(2)).prune_blocks(image_batches(vit_config()), 1, between_steps=3, show_progress=False)
