"""Every KL score of a tiny ViT / DeiT-with-teacher equals the KL of a physically reduced copy (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import kl_sum
from tiny import deit_config, image_batches, randomize, vit_config
from transformers import DeiTForImageClassificationWithTeacher, ViTForImageClassification

from upvit_hf import UPPruner

# Which axis of each ViT/DeiT tensor is the residual (hidden) axis; written independently of the library.
RESIDUAL_AXIS = {
    "cls_token": 2, "distillation_token": 2, "position_embeddings": 2,
    "projection.weight": 0, "projection.bias": 0,
    "q_proj.weight": 1, "k_proj.weight": 1, "v_proj.weight": 1, "fc1.weight": 1,
    "o_proj.weight": 0, "o_proj.bias": 0, "fc2.weight": 0, "fc2.bias": 0,
    "classifier.weight": 1,
}


def residual_axis(key: str) -> int | None:
    if "layernorm" in key:
        return 0
    return next((axis for suffix, axis in RESIDUAL_AXIS.items() if key.endswith(suffix)), None)


def without_residual_channel(model, channel: int):
    """A float64 copy of `model` that physically lacks hidden channel `channel` everywhere."""
    config = copy.deepcopy(model.config)
    head_dim = config.hidden_size // config.num_attention_heads
    config.head_dim, config.hidden_size = head_dim, config.hidden_size - 1
    keep = torch.tensor([c for c in range(model.config.hidden_size) if c != channel])
    state = {}
    for key, tensor in model.state_dict().items():
        axis = residual_axis(key)
        state[key] = tensor if axis is None else tensor.index_select(axis, keep)
    reduced = type(model)(config).double().eval()
    reduced.load_state_dict({k: v.double() for k, v in state.items()})
    return reduced


def with_zeroed(model, edits):
    """A float64 copy with some (parameter, axis, index) entries zeroed."""
    zeroed = copy.deepcopy(model).double().eval()
    params = dict(zeroed.named_parameters())
    with torch.no_grad():
        for name, axis, index in edits:
            params[name].select(axis, index).zero_()
    return zeroed


def reference_scores(model, batches):
    """(residual, attention, ffn) scores by building one reduced copy per channel."""
    original = copy.deepcopy(model).double().eval()
    config = model.config
    residual = [kl_sum(original, without_residual_channel(model, c), batches) for c in range(config.hidden_size)]
    attention, ffn = [], []
    for layer in range(config.num_hidden_layers):
        prefix = f"{model.base_model_prefix}.layers.{layer}"
        qkv = [f"{prefix}.attention.{p}_proj.{t}" for p in "qkv" for t in ("weight", "bias")]
        attention.append([
            kl_sum(original, with_zeroed(model, [(name, 0, i) for name in qkv]), batches)
            for i in range(config.num_attention_heads * (config.hidden_size // config.num_attention_heads))
        ])
        ffn.append([
            kl_sum(original, with_zeroed(model, [(f"{prefix}.mlp.fc2.weight", 1, j)]), batches)
            for j in range(config.intermediate_size)
        ])
    return torch.tensor(residual), [torch.tensor(a) for a in attention], [torch.tensor(f) for f in ffn]


def assert_scores_close(scores, reference, rtol):
    residual, attention, ffn = reference
    torch.testing.assert_close(scores.residual, residual.double(), rtol=rtol, atol=0)
    for got, want in zip(scores.attention, attention):
        torch.testing.assert_close(got, want.double(), rtol=rtol, atol=0)
    for got, want in zip(scores.ffn, ffn):
        torch.testing.assert_close(got, want.double(), rtol=rtol, atol=0)


CASES = [
    pytest.param(ViTForImageClassification, vit_config, id="vit"),
    pytest.param(DeiTForImageClassificationWithTeacher, deit_config, id="deit-with-teacher"),
]


@pytest.mark.parametrize("cls, make_config", CASES)
def test_float64_scores_equal_physical_removal(cls, make_config):
    model = randomize(cls(make_config())).double()
    batches = image_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=5, show_progress=False)
    assert scores.meta["proxy_size"] == 5
    assert_scores_close(scores, reference_scores(model, batches), rtol=1e-6)


@pytest.mark.parametrize("cls, make_config", CASES)
def test_float32_scores_match_float64_reference(cls, make_config):
    model = randomize(cls(make_config()))
    batches = image_batches(model.config)
    scores = UPPruner(model).score(batches, variants_per_pass=7, show_progress=False)
    assert_scores_close(scores, reference_scores(model, batches), rtol=1e-3)


def test_scoring_leaves_model_unchanged_and_in_its_mode():
    model = randomize(ViTForImageClassification(vit_config(hidden_dropout_prob=0.5))).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = image_batches(model.config)
    scores = UPPruner(model).score(batches, show_progress=False)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # dropout is off while scoring: the same scores come out of an eval-mode copy
    again = UPPruner(copy.deepcopy(model).eval()).score(batches, show_progress=False)
    torch.testing.assert_close(scores.residual, again.residual)


def test_variants_per_pass_does_not_change_scores():
    model = randomize(ViTForImageClassification(vit_config())).double()
    batches = image_batches(model.config)
    one = UPPruner(model).score(batches, variants_per_pass=1, show_progress=False)
    many = UPPruner(model).score(batches, variants_per_pass=64, show_progress=False)
    torch.testing.assert_close(one.residual, many.residual, rtol=1e-9, atol=0)
    torch.testing.assert_close(one.ffn[1], many.ffn[1], rtol=1e-9, atol=0)
