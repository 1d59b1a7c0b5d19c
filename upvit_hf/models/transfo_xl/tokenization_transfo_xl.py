"""A stock fast tokenizer from a transformers 4.x Transformer-XL vocabulary (``vocab.pkl``).

transformers 5 has no ``TransfoXLTokenizer``; a 4.x checkpoint ships its vocabulary as ``vocab.pkl``, the pickled
``__dict__`` of that tokenizer. Unpickling a downloaded file with `pickle.load` runs whatever code it names, so
`load_vocab_pickle` reads it with a restricted unpickler: it builds only plain containers, strings, numbers,
``collections.OrderedDict`` and ``collections.Counter``. The other objects 4.x happens to pickle along (its
sacremoses helpers, compiled regexes, ``AddedToken``s, the special-token trie) are never constructed: each is
replaced by an inert placeholder, and only the vocabulary (``idx2sym``, ``sym2idx``, ``unk_idx``, ``lower_case``) is
read. Any other global in the file is refused with a `ValueError` before anything is built from it.

`build_tokenizer` turns the vocabulary into a `PreTrainedTokenizerFast` (word-level model, whitespace
pre-tokenisation, ``<unk>`` for unknown words, ``<eos>`` as end of sequence) that `AutoTokenizer` loads from the
model folder without this package. It reproduces 4.x ids exactly on *pre-tokenized* text (WikiText lines). 4.x
tokenized raw text with sacremoses (punctuation normalisation, Moses tokenisation with aggressive dash splits,
number splitting ``5,000 -> 5 @,@ 000``), which a fast tokenizer cannot express: `moses_pretokenize` does that
step (with `sacremoses`, as 4.x did) and returns text the fast tokenizer then splits on whitespace.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerFast

VOCAB_FILE = "vocab.pkl"

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("collections", "Counter"): Counter,
}
# Objects 4.x pickles along with the vocabulary that the conversion never needs: never imported, never built.
_IGNORED_GLOBALS = {
    ("re", "_compile"),
    ("sacremoses.normalize", "MosesPunctNormalizer"),
    ("sacremoses.tokenize", "MosesTokenizer"),
    ("sacremoses.tokenize", "MosesDetokenizer"),
    ("tokenizers", "AddedToken"),
    ("transformers.tokenization_utils", "Trie"),
    ("transformers.tokenization_utils_base", "AddedToken"),
}


class _Ignored:
    """Stands in for an ignored 4.x object: accepts any constructor arguments and state, keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


class _VocabUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        if (module, name) in _IGNORED_GLOBALS:
            return _Ignored
        raise ValueError(
            f"refusing to unpickle {module}.{name}: a Transformer-XL vocab.pkl holds only containers, strings, "
            "numbers, OrderedDict and Counter (and 4.x tokenizer helpers, which are skipped)"
        )

    def persistent_load(self, pid):
        raise ValueError("refusing a pickle with persistent ids (not a Transformer-XL vocab.pkl)")


@dataclass(frozen=True)
class TransfoXLVocab:
    """What a 4.x vocabulary defines: the symbols in id order, the unknown symbol, lower-casing."""

    symbols: list[str]
    unk_token: str
    lower_case: bool = False


def load_vocab_pickle(path: str | os.PathLike) -> TransfoXLVocab:
    """Read a 4.x ``vocab.pkl`` safely (see the module docstring) and check it describes a vocabulary."""
    data = Path(path).read_bytes()
    try:
        state = _VocabUnpickler(io.BytesIO(data)).load()
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
    if isinstance(state, int):
        raise ValueError(f"{path}: a torch-saved vocabulary (vocab.bin); re-save it with transformers 4.x as vocab.pkl")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected the pickled dict of a TransfoXLTokenizer, got {type(state).__name__}")
    symbols = _symbols_in_id_order(state.get("sym2idx"), path)
    listed = state.get("idx2sym")
    if listed and listed != symbols:  # 4.35 saves an empty idx2sym after a reload; sym2idx is what 4.x encodes with
        raise ValueError(f"{path}: idx2sym and sym2idx disagree")
    if state.get("delimiter") is not None:
        raise ValueError(f"{path}: delimiter={state['delimiter']!r} is not supported (4.x default None only)")
    unk_idx = state.get("unk_idx")
    if type(unk_idx) is int and 0 <= unk_idx < len(symbols):
        unk_token = symbols[unk_idx]
    else:  # 4.x falls back to these names
        unk_token = next((s for s in ("<unk>", "<UNK>") if s in symbols), None)
        if unk_token is None:  # 4.x would fail on the first unknown word
            raise ValueError(f"{path}: no unknown-word symbol (<unk> or <UNK>) in the vocabulary")
    return TransfoXLVocab(symbols=symbols, unk_token=unk_token, lower_case=bool(state.get("lower_case")))


def _symbols_in_id_order(sym2idx: object, path: str | os.PathLike) -> list[str]:
    """The symbols of a ``{symbol: id}`` map in id order; the ids must be exactly 0 ... n-1."""
    if not isinstance(sym2idx, dict) or not sym2idx:
        raise ValueError(f"{path}: no sym2idx vocabulary")
    if not all(isinstance(s, str) and type(i) is int for s, i in sym2idx.items()):
        raise ValueError(f"{path}: sym2idx must map strings to integers")
    symbols = sorted(sym2idx, key=sym2idx.__getitem__)
    if [sym2idx[s] for s in symbols] != list(range(len(symbols))):
        raise ValueError(f"{path}: sym2idx ids are not 0 ... {len(symbols) - 1} (duplicates or gaps)")
    return symbols


def build_tokenizer(vocab: TransfoXLVocab, eos_token: str = "<eos>") -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` with the 4.x ids for whitespace-separated tokens (see module docstring)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    core = Tokenizer(models.WordLevel({s: i for i, s in enumerate(vocab.symbols)}, unk_token=vocab.unk_token))
    if vocab.lower_case:
        core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    specials = {"unk_token": vocab.unk_token}
    if eos_token in vocab.symbols:
        specials["eos_token"] = eos_token
    # No attention mask: Transformer-XL has no padding mask and attends to everything.
    return PreTrainedTokenizerFast(tokenizer_object=core, model_input_names=["input_ids"], **specials)


def convert_vocab(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The fast tokenizer of a model folder's 4.x ``vocab.pkl`` (or of the file itself)."""
    path = Path(path)
    return build_tokenizer(load_vocab_pickle(path / VOCAB_FILE if path.is_dir() else path))


# -- raw text -----------------------------------------------------------------------------------------------------

_NUMBER_SEPARATOR = re.compile(r"(?<=\d)[,.](?=\d)")


def moses_pretokenize(
    text: str, special_tokens: tuple[str, ...] = ("<unk>", "<eos>", "<formula>"), language: str = "en"
) -> str:
    """Raw text -> the whitespace-separated tokens 4.x's ``TransfoXLTokenizer`` produced for it.

    Special tokens are split off first and kept whole; every other stretch is stripped, punctuation-normalised and
    Moses-tokenized (aggressive dash splits, no escaping), and ``,``/``.`` between digits become ``@,@``/``@.@``.
    """
    import sacremoses

    normalizer = sacremoses.MosesPunctNormalizer(language)
    moses = sacremoses.MosesTokenizer(language)
    pattern = "(" + "|".join(re.escape(s) for s in special_tokens) + ")" if special_tokens else None
    pieces = re.split(pattern, text) if pattern else [text]
    tokens: list[str] = []
    for piece in pieces:
        if piece in special_tokens:
            tokens.append(piece)
            continue
        piece = piece.strip()
        if not piece:
            continue
        words = moses.tokenize(
            normalizer.normalize(piece), aggressive_dash_splits=True, return_str=False, escape=False,
            protected_patterns=list(special_tokens),
        )
        for word in words:
            tokens.extend(_NUMBER_SEPARATOR.sub(r" @\g<0>@ ", word).split())
    return " ".join(tokens)
