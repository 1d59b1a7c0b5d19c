"""Loading evaluation data from a Hub name, a `save_to_disk` folder, an image folder or a text file.

One helper per data kind decides how to read `name_or_path`, so the CLI can take a Hub id for real runs and a
local path for offline ones without caring which loader applies.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDataset, load_dataset, load_from_disk

DEFAULT_IMAGE_DATASET = "ILSVRC/imagenet-1k"  # the canonical id of `imagenet-1k`
DEFAULT_TEXT_DATASET = "Salesforce/wikitext"  # the canonical id of `wikitext`
DEFAULT_TEXT_CONFIG = "wikitext-2-raw-v1"

_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


def looks_local(name_or_path: str | os.PathLike) -> bool:
    """Whether a name is meant as a local path rather than a Hub id (hub ids are `name` or `org/name`)."""
    name = str(name_or_path)
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1


def check_exists(name_or_path: str | os.PathLike, what: str) -> None:
    """ValueError for a local path that does not exist (instead of a confusing Hub lookup)."""
    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise ValueError(f"{what} {name_or_path} does not exist")


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    path = Path(path)
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS)


def _pick_split(data: DatasetDict | Dataset, split: str | None, source: str) -> Dataset:
    """Return `split` of a DatasetDict (or the only split when the folder has no split structure)."""
    if isinstance(data, Dataset):
        return data
    if split is not None and split in data:
        return data[split]
    if len(data) == 1:
        return next(iter(data.values()))
    raise ValueError(f"{source} has no split {split!r}; available splits: {sorted(data)}")


def load_image_dataset(
    name_or_path: str | os.PathLike = DEFAULT_IMAGE_DATASET,
    split: str | None = "validation",
    *,
    config_name: str | None = None,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """Load an image-classification split from a `save_to_disk` folder, an imagefolder tree or the Hub.

    A folder written by `save_to_disk` is read with `load_from_disk`; any other folder is read as an
    `imagefolder` (class sub-folders, optionally under split folders); anything else is a `datasets` name.
    """
    check_exists(name_or_path, "dataset")
    path = Path(name_or_path)
    if is_saved_dataset(path):
        return _pick_split(load_from_disk(str(path)), split, str(path))
    if path.is_dir():
        return _pick_split(load_dataset("imagefolder", data_dir=str(path)), split, str(path))
    if path.exists():
        raise ValueError(f"{path} is a file; expected a dataset folder, an image folder or a dataset name")
    return load_dataset(str(name_or_path), config_name, split=split, streaming=streaming)


def load_text(
    name_or_path: str | os.PathLike = DEFAULT_TEXT_DATASET,
    config_name: str | None = DEFAULT_TEXT_CONFIG,
    split: str | None = "test",
    *,
    text_column: str = "text",
    separator: str = "\n\n",
) -> str:
    """Return one evaluation string: a text file as is, or a dataset's documents joined by `separator`.

    Joining WikiText rows with "\\n\\n" is the convention of the Hugging Face perplexity guide, so numbers are
    comparable with published ones. `config_name` is ignored for local paths.
    """
    check_exists(name_or_path, "dataset")
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if is_saved_dataset(path):
        data = _pick_split(load_from_disk(str(path)), split, str(path))
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"{path} holds neither a saved dataset nor .txt files")
        return separator.join(p.read_text(encoding="utf-8") for p in files)
    else:
        data = load_dataset(str(name_or_path), config_name, split=split)
    check_columns(data, [text_column])
    return separator.join(data[text_column])


def check_columns(dataset: Dataset | IterableDataset, columns: list[str]) -> None:
    """Raise a ValueError naming the available columns when a requested column is missing."""
    available = dataset.column_names
    if available is None:  # streaming dataset without resolved features: nothing to check up front
        return
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"Unknown column(s) {missing}; the dataset has columns {list(available)}")
