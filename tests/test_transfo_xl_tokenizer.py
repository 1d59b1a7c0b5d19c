"""Transformer-XL tokenizer from a 4.x vocab.pkl (upvit_hf.models.transfo_xl.tokenization_transfo_xl).

Reference: tests/fixtures/transfo_xl/wikitext, written by transformers 4.35.2 (make_wikitext_fixture.py): a 4.x
checkpoint folder with its vocab.pkl and the ids the real 4.x TransfoXLTokenizer gives.
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest

from upvit_hf.cli import main
from upvit_hf.models.transfo_xl.tokenization_transfo_xl import (
    build_tokenizer,
    convert_vocab,
    load_vocab_pickle,
    moses_pretokenize,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "transfo_xl"
FOLDER = FIXTURES / "wikitext"
EXPECTED = json.loads((FOLDER / "expected.json").read_text(encoding="utf-8"))
LINES = (FIXTURES / "lines.txt").read_text(encoding="utf-8").split("\n")[:-1]  # the file ends with a newline


def test_vocabulary_matches_4x():
    vocab = load_vocab_pickle(FOLDER / "vocab.pkl")
    assert vocab.symbols == EXPECTED["symbols"] and vocab.unk_token == "<unk>" and not vocab.lower_case


def test_pretokenized_lines_get_the_4x_ids():
    tokenizer = convert_vocab(FOLDER)
    assert len(LINES) == len(EXPECTED["pretokenized"]) and "" in LINES  # a blank line is just <eos>
    for line, want in zip(LINES, EXPECTED["pretokenized"]):
        assert tokenizer(line)["input_ids"] + [tokenizer.eos_token_id] == want, line
    assert any(tokenizer.unk_token_id in ids[:-1] for ids in EXPECTED["pretokenized"])  # unknown words occur


def test_raw_text_through_moses_gets_the_4x_tokens_and_ids():
    tokenizer = convert_vocab(FOLDER)
    for case in EXPECTED["raw"]:
        words = moses_pretokenize(case["text"])
        assert words.split() == case["tokens"], case["text"]
        assert tokenizer(words)["input_ids"] == case["ids"], case["text"]


def _fresh_python(code: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as stop:
        return int(stop.code)
    return 0


def test_convert_vocab_cli_writes_a_tokenizer_autotokenizer_loads_without_upvit(tmp_path, capsys):
    folder = tmp_path / "wt"
    shutil.copytree(FOLDER, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # 4.x left a tokenizer_config.json (TransfoXLTokenizer, which transformers 5 lacks): not replaced silently.
    assert _cli("convert-vocab", "--model", str(folder)) == 2
    err = capsys.readouterr().err
    assert "tokenizer_config.json" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert _cli("convert-vocab", "--model", str(folder), "--overwrite") == 0
    assert (folder / "vocab.pkl").read_bytes() == before["vocab.pkl"]

    result = _fresh_python(
        f"""
        import json, sys
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})
        assert "upvit_hf" not in sys.modules
        lines = json.loads({json.dumps(LINES)!r})
        print(json.dumps([tokenizer(line)["input_ids"] + [tokenizer.eos_token_id] for line in lines]))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == EXPECTED["pretokenized"]


class _RunsCode:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


class _Disguised:
    """A payload hidden inside an otherwise well-formed vocabulary dict."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload", ["bare", "inside_vocab"])
def test_a_malicious_pickle_is_refused_without_running(tmp_path, payload):
    marker = tmp_path / "marker"
    obj = _RunsCode(marker) if payload == "bare" else {
        "idx2sym": ["<eos>", "<unk>"], "sym2idx": OrderedDict([("<eos>", 0), ("<unk>", 1)]),
        "moses_tokenizer": _Disguised(marker),
    }
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=r"refusing to unpickle (builtins\.exec|posix\.system|nt\.system)"):
        load_vocab_pickle(path)
    assert not marker.exists()
    # The same file through plain pickle would have run it: the test is not vacuous.
    pickle.loads(path.read_bytes())
    assert marker.exists()


def _write(tmp_path, state) -> pathlib.Path:
    path = tmp_path / "vocab.pkl"
    path.write_bytes(pickle.dumps(state))
    return path


def test_unk_idx_lower_case_and_bad_vocabularies(tmp_path):
    symbols = ["<eos>", "the", "<oov>", "cat"]
    state = {"idx2sym": symbols, "sym2idx": OrderedDict((s, i) for i, s in enumerate(symbols)), "unk_idx": 2,
             "lower_case": True}
    vocab = load_vocab_pickle(_write(tmp_path, state))
    assert vocab.unk_token == "<oov>" and vocab.lower_case
    tokenizer = build_tokenizer(vocab)
    assert tokenizer("The CAT sat")["input_ids"] == [1, 3, 2]

    bad_states = {
        "disagree": {**state, "idx2sym": ["<eos>", "cat", "<oov>", "the"]},
        "gaps": {"sym2idx": {"<unk>": 0, "a": 2}},
        "no unknown-word symbol": {"sym2idx": {"<eos>": 0, "a": 1}},
        "delimiter": {**state, "delimiter": ""},
        "pickled dict": ["<unk>"],
    }
    for match, bad in bad_states.items():
        with pytest.raises(ValueError, match=match):
            load_vocab_pickle(_write(tmp_path, bad))
    (tmp_path / "vocab.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_vocab_pickle(tmp_path / "vocab.pkl")
