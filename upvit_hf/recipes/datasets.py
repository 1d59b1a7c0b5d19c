"""Training data for the distillation recipes: any dataset source, split into train and eval."""

from __future__ import annotations

from typing import Protocol

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from ..evaluation.data import is_saved_dataset


class SplitArguments(Protocol):
    train_split: str
    eval_split: str
    eval_fraction: float


def load_any(name_or_path: str, config: str | None) -> Dataset | DatasetDict:
    """A `save_to_disk` folder, any other local folder (image or text files, inferred), or a hub dataset name."""
    if is_saved_dataset(name_or_path):
        return load_from_disk(name_or_path)
    return load_dataset(name_or_path, config)


def train_eval_splits(ds: Dataset | DatasetDict, args: SplitArguments, seed: int) -> tuple[Dataset, Dataset]:
    """The train split and the eval split, or a seeded held-out fraction of train when there is no eval split."""
    if isinstance(ds, DatasetDict):
        if args.train_split not in ds:
            raise ValueError(f"the dataset has no split {args.train_split!r}; available splits: {sorted(ds)}")
        train = ds[args.train_split]
        if args.eval_split in ds:
            return train, ds[args.eval_split]
    else:
        train = ds
    parts = train.train_test_split(test_size=args.eval_fraction, seed=seed)
    return parts["train"], parts["test"]
