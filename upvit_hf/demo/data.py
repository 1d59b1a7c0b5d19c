"""The demo's embedded data: scikit-learn's 8×8 digits and Penn Treebank from the `treebank` package.

Both ship inside installed packages, so the demo runs with no network. The digits become a real image
dataset (greyscale PIL images + labels) run through a saved `ViTImageProcessorPil`, and Penn Treebank gets the
classic word-level setup (10k-word vocabulary, `<eos>` at every line end), so test perplexities are the usual
word-level ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, ViTImageProcessorPil

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed for every run and seed: all models are compared on the same held-out images
DIGITS_MAX_VALUE = 16  # load_digits pixels are integers 0..16
UNK, EOS = "<unk>", "<eos>"


# ---------------------------------------------------------------------------------------------- digits
@dataclass
class DigitsSplits:
    """Train and test splits as `datasets` image datasets, and the processor that turns them into tensors."""

    train: Dataset
    test: Dataset
    processor: ViTImageProcessorPil

    def pixel_values(self, split: Dataset) -> torch.Tensor:
        """[N, 1, 8, 8] normalized pixels of a whole split (the datasets are small enough to hold at once)."""
        return self.processor(images=list(split["image"]), return_tensors="pt")["pixel_values"]


def digits_processor() -> ViTImageProcessorPil:
    """Scale 0..16 pixels to [-1, 1]; no resizing (the model sees the native 8×8 images)."""
    return ViTImageProcessorPil(
        do_resize=False,
        size={"height": 8, "width": 8},
        do_rescale=True,
        rescale_factor=1.0 / DIGITS_MAX_VALUE,
        do_normalize=True,
        image_mean=[0.5],
        image_std=[0.5],
    )


def load_digit_splits() -> DigitsSplits:
    """The 1797 digits, split once (stratified, seed 0) into 80% train and 20% held-out test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        indices, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target
    )
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def build(idx: np.ndarray) -> Dataset:
        images = [PILImage.fromarray(digits.images[i].astype(np.uint8), mode="L") for i in idx]
        return Dataset.from_dict({"image": images, "label": digits.target[idx].tolist()}, features=features)

    return DigitsSplits(build(train_idx), build(test_idx), digits_processor())


# ---------------------------------------------------------------------------------------------- Penn Treebank
@dataclass
class TreebankSplits:
    """Penn Treebank as token streams (1-D long tensors) and the word-level tokenizer that made them."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    tokenizer: PreTrainedTokenizerFast


def treebank_lines(split: str) -> list[str]:
    """The non-empty lines of one split ('train', 'valid' or 'test') of the Mikolov Penn Treebank."""
    import treebank

    return [line.strip() for line in treebank.penn[split].split("\n") if line.strip()]


def build_word_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the training vocabulary (PTB is already lower-cased, numbers → N).

    Ids are `<unk>` 0, `<eos>` 1, then words by decreasing training frequency (ties alphabetical), so they
    are contiguous and deterministic. (`WordLevelTrainer` leaves a gap when a special token, like PTB's
    `<unk>`, also occurs in the text: 10,000 entries with ids up to 10,000.) Split on whitespace only: PTB
    tokens such as "n't", "u.s." and "'s" are single words, which the punctuation-splitting `Whitespace`
    pre-tokenizer would break apart.
    """
    counts = Counter(word for line in lines for word in line.split())
    words = sorted((w for w in counts if w not in (UNK, EOS)), key=lambda w: (-counts[w], w))
    vocab = {token: index for index, token in enumerate([UNK, EOS, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=UNK, eos_token=EOS, bos_token=EOS,
                                   pad_token=EOS, model_max_length=int(1e9))


def encode_lines(tokenizer: PreTrainedTokenizerFast, lines: list[str]) -> torch.Tensor:
    """One token stream: every line's words followed by `<eos>` (the standard PTB language-modelling text)."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    return torch.tensor([token for line in ids for token in (*line, eos)], dtype=torch.long)


def load_treebank() -> TreebankSplits:
    """Tokenizer trained on the train split; all three splits encoded with it."""
    train_lines = treebank_lines("train")
    tokenizer = build_word_tokenizer(train_lines)
    splits = TreebankSplits(
        train=encode_lines(tokenizer, train_lines),
        valid=encode_lines(tokenizer, treebank_lines("valid")),
        test=encode_lines(tokenizer, treebank_lines("test")),
        tokenizer=tokenizer,
    )
    largest = max(int(split.max()) for split in (splits.train, splits.valid, splits.test))
    if largest >= len(tokenizer):  # would crash an embedding, and only when that one block is drawn
        raise ValueError(f"token id {largest} outside the {len(tokenizer)}-word vocabulary")
    return splits


# ---------------------------------------------------------------------------------------------- torch datasets
class TensorDictDataset(torch.utils.data.Dataset):
    """Rows of equally long tensors as dicts, the form `Trainer` and `default_data_collator` take."""

    def __init__(self, **columns: torch.Tensor) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"all columns need the same length, got {sorted(lengths)}")
        self.columns = columns
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {name: column[index] for name, column in self.columns.items()}


def lm_blocks(stream: torch.Tensor, block_size: int) -> TensorDictDataset:
    """Consecutive non-overlapping blocks of `block_size` tokens (the tail is dropped), labels = inputs."""
    count = len(stream) // block_size
    blocks = stream[: count * block_size].view(count, block_size)
    return TensorDictDataset(input_ids=blocks, labels=blocks)
