"""The one data loader: every data source (a Hub name, a `save_to_disk` folder, an image folder, text files) is
read by the same rules for scoring, evaluation and distillation, and images get the channels the model expects.

Hub datasets can be read with `datasets` streaming, so a proxy set of N samples reads about N samples (plus a
shuffle buffer), never the whole split; local sources are read from disk as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset, load_from_disk

from ..adapters import adapter_class_for_config

DEFAULT_IMAGE_DATASET = "ILSVRC/imagenet-1k"  # the canonical id of `imagenet-1k`
DEFAULT_TEXT_DATASET = "Salesforce/wikitext"  # the canonical id of `wikitext`
DEFAULT_TEXT_CONFIG = "wikitext-2-raw-v1"
SHUFFLE_BUFFER = 1000  # examples a streamed source is shuffled over (the `datasets` default)

_SAVE_TO_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


def looks_local(name_or_path: str | os.PathLike) -> bool:
    """Whether a name is meant as a local path rather than a Hub id (hub ids are `name` or `org/name`)."""
    name = str(name_or_path)
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or Path(name).expanduser().exists()


def check_exists(name_or_path: str | os.PathLike, what: str) -> None:
    """ValueError for a local path that does not exist (instead of a confusing Hub lookup)."""
    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise ValueError(f"{what} {name_or_path} does not exist")


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    path = Path(path).expanduser()
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVE_TO_DISK_MARKERS)


def _text_files(path: Path) -> list[Path]:
    """A text file itself, or the `.txt` files under a folder (sorted)."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*.txt") if p.is_file())


def load_source(name_or_path: str | os.PathLike, config_name: str | None = None) -> Dataset | DatasetDict:
    """Every split of a source: a `save_to_disk` folder, a local folder or text file (`datasets` infers the
    builder: image folders with class sub-folders, text files), or a Hub dataset name."""
    check_exists(name_or_path, "dataset")
    path = Path(name_or_path).expanduser()
    if is_saved_dataset(path):
        return load_from_disk(str(path))
    if path.is_file() and path.suffix == ".txt":
        return load_dataset("text", data_files=str(path))
    if path.is_dir():
        return load_dataset(str(path))
    if path.exists():
        raise ValueError(f"{path} is a file; expected a dataset folder, an image folder, a .txt file or a name")
    return load_dataset(str(name_or_path), config_name)


def pick_split(data: Dataset | DatasetDict | IterableDataset | IterableDatasetDict, split: str | None,
               source: str) -> Dataset | IterableDataset:
    """`split` of a dict of splits (or its only split when the source has no split structure)."""
    if isinstance(data, (Dataset, IterableDataset)):
        return data
    if split is not None and split in data:
        return data[split]
    if len(data) == 1:
        return next(iter(data.values()))
    raise ValueError(f"{source} has no split {split!r}; available splits: {sorted(data)}")


def load_split(
    name_or_path: str | os.PathLike,
    split: str | None,
    *,
    config_name: str | None = None,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """One split of any source (see `load_source`). `streaming` applies to Hub names: the split is then an
    `IterableDataset` read on demand instead of downloaded whole."""
    check_exists(name_or_path, "dataset")
    if looks_local(name_or_path):
        return pick_split(load_source(name_or_path), split, str(name_or_path))
    return load_dataset(str(name_or_path), config_name, split=split, streaming=streaming)


def load_image_dataset(
    name_or_path: str | os.PathLike = DEFAULT_IMAGE_DATASET,
    split: str | None = "validation",
    *,
    config_name: str | None = None,
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """An image-classification split (`load_split` with the ImageNet default)."""
    return load_split(name_or_path, split, config_name=config_name, streaming=streaming)


def text_documents(
    name_or_path: str | os.PathLike = DEFAULT_TEXT_DATASET,
    config_name: str | None = DEFAULT_TEXT_CONFIG,
    split: str | None = "train",
    *,
    text_column: str = "text",
    seed: int | None = None,
    streaming: bool = True,
) -> Iterator[str]:
    """The documents of a text source, one at a time, so a consumer can stop once it has enough.

    A text file or folder yields its lines (newlines kept, read lazily); a dataset yields the rows of
    `text_column`, in a seeded shuffled order when `seed` is given (a Hub dataset is streamed then, with a
    shuffle buffer). `config_name` is ignored for local paths.
    """
    check_exists(name_or_path, "dataset")
    path = Path(name_or_path).expanduser()
    if path.exists() and not is_saved_dataset(path):
        files = _text_files(path)
        if not files:
            raise ValueError(f"{path} holds neither a saved dataset nor .txt files")
        return (line for file in files for line in _lines(file))
    data = load_split(name_or_path, split, config_name=config_name, streaming=streaming)
    check_columns(data, [text_column])
    if seed is not None:
        data = data.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER) if isinstance(data, IterableDataset) \
            else data.shuffle(seed=seed)
    return _column(data, text_column)


def _lines(file: Path) -> Iterator[str]:
    with file.open(encoding="utf-8") as handle:
        yield from handle


def _column(data: Dataset | IterableDataset, column: str) -> Iterator[Any]:
    """The values of `column`, row by row (a streamed dataset's columns are checked on its first row)."""
    if not isinstance(data, IterableDataset):
        data = data.select_columns([column])
    for row in data:
        check_columns(row, [column])
        yield row[column]


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
    path = Path(name_or_path).expanduser()
    if path.exists() and not is_saved_dataset(path):
        files = _text_files(path)
        if not files:
            raise ValueError(f"{path} holds neither a saved dataset nor .txt files")
        return separator.join(file.read_text(encoding="utf-8") for file in files)
    data = load_split(name_or_path, split, config_name=config_name)
    check_columns(data, [text_column])
    return separator.join(data[text_column])


def check_columns(data: Dataset | IterableDataset | dict[str, Any], columns: Iterable[str]) -> None:
    """Raise a ValueError naming the available columns when a requested column is missing (`data` may be a
    dataset or one example of a streamed one)."""
    available = list(data.keys()) if isinstance(data, dict) else data.column_names
    if available is None:  # streaming dataset without resolved features: checked on its first example
        return
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"Unknown column(s) {missing}; the dataset has columns {list(available)}")


# ---- images ------------------------------------------------------------------------------------------------

_MODES = {1: "L", 3: "RGB"}


def image_mode(num_channels: int) -> str:
    """The PIL mode of images for a model with `num_channels` input channels."""
    if num_channels not in _MODES:
        raise ValueError(f"images can be converted for 1- or 3-channel models, not {num_channels} channels")
    return _MODES[num_channels]


def model_channels(model_or_config: Any) -> int:
    """The input channels a vision model expects, as its family's adapter reads them off the config."""
    config = getattr(model_or_config, "config", model_or_config)
    return adapter_class_for_config(config).num_channels(config)


def convert_images(images: Iterable[Any], num_channels: int) -> list[Any]:
    """PIL images in the mode of a `num_channels` model (ImageNet holds greyscale and CMYK JPEGs; a 1-channel
    model's processor normalizes one channel): the one conversion scoring, evaluation and distillation share."""
    mode = image_mode(num_channels)
    return [image.convert(mode) if getattr(image, "mode", mode) != mode else image for image in images]
