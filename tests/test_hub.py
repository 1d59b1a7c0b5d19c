"""Model cards and publishing to a local Hub server (tests/hub_server.py): nothing leaves the machine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError
from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTForImageClassification

from upvit_hf.hub import push_pruned_model
from upvit_hf.model_card import build_model_card, pruning_record, write_model_card

RECORD = {
    "base_model": "google/vit-base-patch16-224",
    "method": "kl",
    "proxy_size": 2000,
    "original": {"hidden_size": 768, "num_attention_heads": 12, "head_dim": 64, "intermediate_size": 3072,
                 "num_hidden_layers": 12},
    "pruned": {"hidden_size": 24, "num_attention_heads": 2, "head_dim": 12, "intermediate_size": 40,
               "num_hidden_layers": 2},
    "upvit_hf_version": "0.1.0",
    "calibration_seed": 7,  # a key the card builder does not know
}


def _tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40,
                       image_size=16, patch_size=8, num_labels=5)
    config.upvit_pruning = RECORD
    return ViTForImageClassification(config).eval()


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(1)
    config = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_inner=24, vocab_size=64, n_positions=32,
                        bos_token_id=0, eos_token_id=0)
    config.upvit_pruning = {**RECORD, "base_model": "openai-community/gpt2"}
    return GPT2LMHeadModel(config).eval()


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# A fresh interpreter reads HF_ENDPOINT at import, exactly like a user's script would.
_LOADER = r"""
import hashlib, json, sys, torch
from transformers import AutoModelForCausalLM, AutoModelForImageClassification
out = {}
for repo_id, kind in json.loads(sys.argv[1]).items():
    auto = AutoModelForCausalLM if kind == "lm" else AutoModelForImageClassification
    model = auto.from_pretrained(repo_id).eval()
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode()); h.update(value.detach().to(torch.float32).contiguous().numpy().tobytes())
    torch.manual_seed(0)
    x = {"input_ids": torch.arange(8)[None] % 64} if kind == "lm" else {"pixel_values": torch.randn(1, 3, 16, 16)}
    with torch.no_grad():
        logits = model(**x).logits
    out[repo_id] = {"digest": h.hexdigest(), "logits": logits.flatten().tolist(),
                    "pruning": model.config.upvit_pruning}
print("RESULT" + json.dumps(out))
"""


def _load_in_fresh_interpreter(repos: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", _LOADER, json.dumps(repos)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _logits(model: torch.nn.Module, kind: str) -> torch.Tensor:
    torch.manual_seed(0)
    x = {"input_ids": torch.arange(8)[None] % 64} if kind == "lm" else {"pixel_values": torch.randn(1, 3, 16, 16)}
    with torch.no_grad():
        return model(**x).logits.flatten()


# ---- model card ------------------------------------------------------------------------------------
def test_model_card_mentions_pruning() -> None:
    model = _tiny_vit()
    card = build_model_card(model, metrics={"imagenet-1k": {"top1": 0.7579, "top5": 0.93}},
                            original_stats={"params": 86_567_656, "flops": 35_150_000_000}, repo_id="me/up-vit")
    data = card.data.to_dict()
    assert data["base_model"] == "google/vit-base-patch16-224"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert {"pruning", "upvit"} <= set(data["tags"])
    text = card.text
    assert "| hidden size (residual channels) | 768 | 24 |" in text
    assert "| FFN intermediate size | 3,072 | 40 |" in text
    assert "| attention heads | 12 | 2 |" in text
    assert "86,567,656" in text and f"{sum(p.numel() for p in model.parameters()):,}" in text
    assert "0.7579" in text and "calibration_seed" in text and "2,000 samples" in text
    assert ModelCard(str(card)).data.to_dict()["upvit"]["metrics"]["imagenet-1k"]["top1"] == 0.7579


def test_model_card_requires_record() -> None:
    model = _tiny_vit()
    del model.config.upvit_pruning
    with pytest.raises(ValueError, match="upvit_pruning"):
        build_model_card(model)


def test_write_model_card_refresh_keeps_metrics(tmp_path: Path) -> None:
    model = _tiny_gpt2()
    model.save_pretrained(tmp_path)
    assert pruning_record(json.loads((tmp_path / "config.json").read_text()))["method"] == "kl"
    write_model_card(tmp_path, metrics={"wikitext-2 perplexity": 31.5})
    readme = write_model_card(tmp_path, repo_id="me/tiny")  # refresh: nothing new passed
    card = ModelCard.load(readme)
    assert card.data.pipeline_tag == "text-generation"
    assert "31.5" in card.text and "me/tiny" in card.text
    # parameter count read from the safetensors header equals the model's (tied weights once)
    assert card.data.to_dict()["upvit"]["pruned_stats"]["params"] == sum(p.numel() for p in model.parameters())


# ---- hub ---------------------------------------------------------------------------------------------
def test_push_rejects_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        push_pruned_model(tmp_path / "missing", "me/x")
    with pytest.raises(ValueError, match="config.json"):
        push_pruned_model(tmp_path, "me/x")


def test_push_private_repo_needs_token(local_hub, tmp_path: Path) -> None:
    model = _tiny_vit()
    model.save_pretrained(tmp_path)
    push_pruned_model(tmp_path, "upvit-tester/secret", private=True, commit_message="private upload")
    api = HfApi(endpoint=local_hub.url)
    assert api.model_info("upvit-tester/secret").private is True
    assert sorted(api.list_repo_files("upvit-tester/secret")) == sorted(local_hub.files("upvit-tester/secret"))
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=local_hub.url, token=False).model_info("upvit-tester/secret")
    card = ModelCard(local_hub.files("upvit-tester/secret")["README.md"].decode())
    assert card.data.base_model == RECORD["base_model"] and "upvit-tester/secret" in card.text


@pytest.mark.slow  # starts a second interpreter
def test_push_and_load_roundtrip(local_hub, tmp_path: Path) -> None:
    gpt2 = _tiny_gpt2()
    folder = tmp_path / "pruned-gpt2"
    gpt2.save_pretrained(folder)
    info = push_pruned_model(folder, "upvit-tester/tiny-gpt2", metrics={"perplexity": 42.0})
    files = local_hub.files("upvit-tester/tiny-gpt2")
    assert {"config.json", "model.safetensors", "README.md", ".gitattributes"} <= set(files)
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert b"upvit" in files["README.md"] and b"42" in files["README.md"]

    api = HfApi(endpoint=local_hub.url)
    model_info = api.model_info("upvit-tester/tiny-gpt2")
    assert model_info.sha == info.oid
    assert {s.rfilename for s in model_info.siblings} == set(files)
    assert "upvit" in model_info.tags and model_info.pipeline_tag == "text-generation"

    # pushing the same folder again changes nothing: the server reports the stored oids
    again = push_pruned_model(folder, "upvit-tester/tiny-gpt2")
    assert again.oid == info.oid

    vit = _tiny_vit()
    vit.push_to_hub("upvit-tester/tiny-vit")  # transformers' own upload path
    assert "model.safetensors" in local_hub.files("upvit-tester/tiny-vit")

    loaded = _load_in_fresh_interpreter({"upvit-tester/tiny-gpt2": "lm", "upvit-tester/tiny-vit": "image"})
    for repo_id, model, kind in (("upvit-tester/tiny-gpt2", gpt2, "lm"), ("upvit-tester/tiny-vit", vit, "image")):
        assert loaded[repo_id]["digest"] == _digest(model)
        torch.testing.assert_close(torch.tensor(loaded[repo_id]["logits"]), _logits(model, kind))
        assert loaded[repo_id]["pruning"]["method"] == "kl"
    assert local_hub.unhandled == []
