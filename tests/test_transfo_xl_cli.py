"""A Transformer-XL checkpoint as transformers 4.x left it (vocab.pkl, no transformers-5 tokenizer), end to end:
upvit score -> prune -> evaluate -> push -> a fresh interpreter runs the model card's own loading snippet and
recomputes the perplexity with a loop of its own (no upvit_hf)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoModelForCausalLM

import upvit_hf.models  # noqa: F401  (registers Transformer-XL)
from upvit_hf import ImportanceScores
from upvit_hf.cli import main

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "transfo_xl"
REPO = "upvit-tester/up-transfo-xl"

FRESH = textwrap.dedent(
    """
    import json, sys, torch
    snippet, lines_file = sys.argv[1], sys.argv[2]
    scope = {}
    exec(snippet, scope)  # the model card's code: defines `model` and `tokenizer`
    model, tokenizer = scope["model"].eval(), scope["tokenizer"]
    assert "upvit_hf" not in sys.modules, "the card's snippet needed upvit_hf"
    lines = open(lines_file, encoding="utf-8").read().split("\\n")[:-1]
    stream = torch.tensor([i for line in lines for i in tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]])
    model.config.mem_len, model.config.clamp_len, model.config.same_length = 10, 4, True
    total, count, mems = 0.0, 0, None
    with torch.no_grad():
        for i in range(0, len(stream) - 1, 6):
            n = min(6, len(stream) - 1 - i)
            out = model(input_ids=stream[None, i : i + n], mems=mems)
            log_probs = out.logits[0].double().log_softmax(-1)
            total -= float(log_probs.gather(-1, stream[i + 1 : i + 1 + n, None]).sum())
            count, mems = count + n, out.mems
    print(json.dumps({"total_nll": total, "num_tokens": count, "class": type(model).__module__}))
    """
)


def upvit(*args) -> None:
    main([str(a) for a in args])


def test_4x_checkpoint_score_prune_evaluate_push_and_reload(tmp_path, local_hub):
    base = tmp_path / "transfo-xl-4x"
    shutil.copytree(FIXTURES / "wikitext", base)
    (base / "expected.json").unlink()
    assert (base / "vocab.pkl").exists() and not (base / "tokenizer.json").exists()
    corpus, lines = FIXTURES / "corpus.txt", FIXTURES / "lines.txt"

    upvit("score", "--model", base, "--dataset", corpus, "--proxy-size", 4, "--seq-len", 8, "--batch-size", 2,
          "--output", tmp_path / "scores.safetensors")
    assert ImportanceScores.load(tmp_path / "scores.safetensors").meta["proxy_size"] == 4
    upvit("prune", "--model", base, "--scores", tmp_path / "scores.safetensors", "--hidden-size", 12,
          "--num-heads", 2, "--head-dim", 4, "--intermediate-size", 10, "--output", tmp_path / "pruned")
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert (pruned.config.d_model, pruned.config.n_head, pruned.config.d_head, pruned.config.d_inner) == (12, 2, 4, 10)
    assert (tmp_path / "pruned" / "tokenizer.json").exists()  # the converted vocabulary travels with the model
    assert sorted(p.name for p in base.iterdir()) == sorted(p.name for p in (FIXTURES / "wikitext").iterdir()
                                                            if p.name != "expected.json")  # base untouched

    upvit("evaluate", "--model", tmp_path / "pruned", "--dataset", lines, "--tgt-len", 6, "--mem-len", 10,
          "--clamp-len", 4, "--batch-size", 2, "--output", tmp_path / "eval.json")
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]

    upvit("push", tmp_path / "pruned", REPO, "--metrics", tmp_path / "eval.json")
    card = local_hub.files(REPO)["README.md"].decode()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert snippet.count("trust_remote_code=True") == 2 and REPO in snippet

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    env.pop("PYTHONPATH", None)
    fresh = subprocess.run([sys.executable, "-c", FRESH, snippet, str(lines)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    reloaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert reloaded["class"].startswith("transformers_modules.")
    assert reloaded["num_tokens"] == metrics["num_tokens"]
    assert reloaded["total_nll"] == pytest.approx(metrics["total_nll"], rel=1e-6)
