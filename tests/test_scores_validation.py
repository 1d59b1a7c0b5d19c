"""Scores files that cannot be trusted are refused with a ValueError before they prune anything."""

from __future__ import annotations

import pytest
import torch
from tiny import randomize, vit_config
from transformers import ViTForImageClassification

from upvit_hf import ImportanceScores, PruningTarget, UPPruner


@pytest.fixture
def pruner():
    return UPPruner(randomize(ViTForImageClassification(vit_config())))


def test_corrupt_file_is_a_value_error(tmp_path):
    (tmp_path / "s.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a readable scores file"):
        ImportanceScores.load(tmp_path / "s.safetensors")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_refused_on_load_and_on_prune(pruner, tmp_path, value):
    scores = pruner.score(method="magnitude")
    scores.attention[0][2] = value
    with pytest.raises(ValueError, match="NaN or infinite scores in attention.0"):
        pruner.prune(PruningTarget.from_ratio(pruner.model.config, 0.5), scores)
    scores.save(tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ImportanceScores.load(tmp_path / "s.safetensors")


def test_scores_of_another_model_need_force(pruner):
    other = UPPruner(randomize(ViTForImageClassification(vit_config()), seed=1))
    other.model.name_or_path = "someone/else"
    scores = other.score(method="magnitude")  # same shapes, another model
    target = PruningTarget.from_ratio(pruner.model.config, 0.5)
    with pytest.raises(ValueError, match="computed on 'someone/else'"):
        pruner.prune(target, scores)
    forced = pruner.prune(target, scores, force=True)
    kept = scores.residual.topk(8).indices.sort().values
    torch.testing.assert_close(forced.vit.embeddings.cls_token, pruner.model.vit.embeddings.cls_token[..., kept],
                               rtol=0, atol=0)
