"""What the distillation recipes share: the student/teacher arguments, the data arguments, and splitting a
source (read by the one loader, `evaluation.data.load_source`) into train and eval."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel

from ..adapters import adapter_class_for_config, load_pretrained


@dataclass
class DistillationModelArguments:
    student: str = field(metadata={"help": "Pruned student: hub id or local folder."})
    teacher: str = field(metadata={"help": "Unpruned teacher: hub id or local folder."})
    alpha: float = field(default=1.0, metadata={"help": "Weight of the KL term."})
    temperature: float = field(default=1.0, metadata={"help": "Distillation temperature (1 = the paper's form)."})


@dataclass
class DistillationDataArguments:
    dataset: str = field(metadata={"help": "`datasets` name, `save_to_disk` folder, image or text folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "`datasets` configuration name."})
    train_split: str = "train"
    eval_split: str = field(default="validation", metadata={"help": "Split off from train when missing."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Held-out fraction when there is no eval split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training samples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on evaluation samples."})


def load_student_and_teacher(
    args: DistillationModelArguments, auto_class: type
) -> tuple[PreTrainedModel, PreTrainedModel]:
    """Student and teacher as the classes their checkpoints were saved as (no head dropped or added); ValueError
    unless both are models the recipe distils: classes that `auto_class` loads."""
    models = []
    for role, name in (("student", args.student), ("teacher", args.teacher)):
        model = load_pretrained(name)
        if adapter_class_for_config(model.config).auto_class(type(model)) is not auto_class:
            raise ValueError(f"the {role} {name!r} is a {type(model).__name__}; this recipe distils models that "
                             f"{auto_class.__name__} loads")
        models.append(model)
    return models[0], models[1]


def train_eval_splits(ds: Dataset | DatasetDict, args: DistillationDataArguments, seed: int) -> tuple[Dataset, Dataset]:
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
