"""The WikiText-103 protocol for models with memories (evaluation/perplexity.py), on Transformer-XL.

References: transformers 4.35.2's own evaluation loop on the same stream (tests/fixtures/transfo_xl/wikitext,
make_wikitext_fixture.py), and a loop written here from the protocol's definition.
"""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch
from transformers import AutoModelForCausalLM

import upvit_hf.models  # noqa: F401  (registers Transformer-XL)
from upvit_hf.cli import main
from upvit_hf.evaluation import evaluate_perplexity, line_stream
from upvit_hf.models.transfo_xl.tokenization_transfo_xl import convert_vocab

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "transfo_xl"
FOLDER = FIXTURES / "wikitext"
EXPECTED = json.loads((FOLDER / "expected.json").read_text(encoding="utf-8"))
PROTOCOL = EXPECTED["protocol"]
SETTINGS = {key: PROTOCOL[key] for key in ("tgt_len", "mem_len", "clamp_len")}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return AutoModelForCausalLM.from_pretrained(FOLDER), convert_vocab(FOLDER)


def _reference(model, stream: torch.Tensor, tgt_len: int) -> tuple[float, int]:
    """Segments [i, i + L) predict [i + 1, i + L + 1) in order, mems carried; NLL from the log-probabilities."""
    total, count, mems = 0.0, 0, None
    with torch.no_grad():
        for i in range(0, len(stream) - 1, tgt_len):
            length = min(tgt_len, len(stream) - 1 - i)
            out = model(input_ids=stream[None, i : i + length], mems=mems)
            targets = stream[i + 1 : i + 1 + length]
            total -= float(out.logits[0].double().log_softmax(-1).gather(-1, targets[:, None]).sum())
            count, mems = count + length, out.mems
    return total, count


def test_line_stream_is_every_line_plus_eos(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    text = (FIXTURES / "lines.txt").read_text(encoding="utf-8")
    stream = line_stream(tokenizer, text)
    assert stream.tolist() == [i for ids in EXPECTED["pretokenized"] for i in ids]
    assert line_stream(tokenizer, "a b\n\n").tolist() == line_stream(tokenizer, "a b\n").tolist() + [0]


def test_protocol_matches_transformers_4x_and_the_reference_loop(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    before = (model.config.mem_len, model.config.clamp_len, model.config.same_length)
    result = evaluate_perplexity(model, tokenizer, FIXTURES / "lines.txt", progress=False, **SETTINGS)
    assert (model.config.mem_len, model.config.clamp_len, model.config.same_length) == before  # restored
    assert result.num_tokens == PROTOCOL["num_tokens"] and result.num_windows == PROTOCOL["segments"]
    assert result.total_nll == pytest.approx(PROTOCOL["total_nll"], rel=1e-5, abs=1e-4)
    assert result.perplexity == pytest.approx(math.exp(PROTOCOL["total_nll"] / PROTOCOL["num_tokens"]), rel=1e-5)

    stream = torch.tensor([i for ids in EXPECTED["pretokenized"] for i in ids])
    model.config.mem_len, model.config.clamp_len, model.config.same_length = 10, 4, True
    try:
        total, count = _reference(model, stream, tgt_len=6)
    finally:
        model.config.mem_len, model.config.clamp_len, model.config.same_length = before
    assert count == result.num_tokens and result.total_nll == pytest.approx(total, rel=1e-6)

    # The settings matter: other memory lengths / no same_length give other numbers.
    shorter = evaluate_perplexity(model, tokenizer, FIXTURES / "lines.txt", progress=False,
                                  **{**SETTINGS, "mem_len": 2})
    unequal = evaluate_perplexity(model, tokenizer, FIXTURES / "lines.txt", progress=False, same_length=False,
                                  **SETTINGS)
    assert abs(shorter.total_nll - result.total_nll) > 1e-3 and abs(unequal.total_nll - result.total_nll) > 1e-3


def test_cli_evaluate_on_a_4x_folder_converts_the_vocabulary(tmp_path):
    out = tmp_path / "eval.json"
    main(["evaluate", "--model", str(FOLDER), "--dataset", str(FIXTURES / "lines.txt"), "--tgt-len", "6",
          "--mem-len", "10", "--clamp-len", "4", "--batch-size", "2", "--output", str(out)])
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num_tokens"] == PROTOCOL["num_tokens"]
    assert metrics["total_nll"] == pytest.approx(PROTOCOL["total_nll"], rel=1e-5, abs=1e-4)
    assert not (FOLDER / "tokenizer.json").exists()  # converted in memory; the model folder is untouched


def test_dataset_rows_are_lines_as_in_hub_wikitext(model_and_tokenizer, tmp_path):
    """Hub WikiText rows are the file's lines: text rows end with "\\n", blank lines are ""."""
    from datasets import Dataset, DatasetDict

    model, tokenizer = model_and_tokenizer
    lines = (FIXTURES / "lines.txt").read_text(encoding="utf-8").split("\n")[:-1]
    rows = [line + "\n" if line else "" for line in lines]
    DatasetDict(test=Dataset.from_dict({"text": rows})).save_to_disk(tmp_path / "wiki")
    result = evaluate_perplexity(model, tokenizer, tmp_path / "wiki", progress=False, **SETTINGS)
    assert result.num_tokens == PROTOCOL["num_tokens"]
    assert result.total_nll == pytest.approx(PROTOCOL["total_nll"], rel=1e-5, abs=1e-4)
