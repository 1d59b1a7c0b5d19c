"""Fine-tune a pruned ViT / DeiT student with soft distillation from its unpruned teacher (UP-ViTs, Eq. 2).

The defaults follow the authors' ImageNet recipe: AdamW (lr 1e-3, weight decay 1e-3), cosine schedule with
warm-up, RandomResizedCrop + horizontal flip + CutMix, optional EMA of the weights. For example:

    python examples/distill_vit.py --student ./up-deit-s --teacher facebook/deit-base-distilled-patch16-224 \\
        --dataset ILSVRC/imagenet-1k --output_dir up-deit-s-ft --per_device_train_batch_size 256 \\
        --num_train_epochs 100 --warmup_steps 0.02 --bf16 --ema_decay 0.99996
    accelerate launch --num_processes 8 examples/distill_vit.py ...   # same arguments

`--dataset` is a `datasets` name, a `save_to_disk` folder or an image folder; `--student`/`--teacher` are
hub ids or local folders. Images are transformed with plain torch ops (no torchvision needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Image
from transformers import (
    AutoModelForImageClassification,
    EvalPrediction,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)
from transformers.image_processing_base import ImageProcessingMixin

from ..adapters import adapter_class_for_config
from ..distillation import DistillationTrainer, EMACallback
from ..evaluation.data import check_columns, convert_images, load_source
from ..model_io import load_processor
from .common import DistillationDataArguments, DistillationModelArguments, load_student_and_teacher, train_eval_splits


@dataclass
class ModelArguments(DistillationModelArguments):
    ema_decay: float | None = field(default=None, metadata={"help": "Keep an EMA of the weights and save it."})


@dataclass
class DataArguments(DistillationDataArguments):
    image_column: str | None = field(default=None, metadata={"help": "Default: the first image column."})
    label_column: str = "label"
    crop_min_scale: float = field(default=0.08, metadata={"help": "RandomResizedCrop minimum area fraction."})
    crop_pct: float = field(default=0.875, metadata={"help": "Eval: resize to size / crop_pct, center crop."})
    cutmix_alpha: float = field(default=1.0, metadata={"help": "CutMix Beta(alpha, alpha); 0 disables CutMix."})
    cutmix_prob: float = field(default=1.0, metadata={"help": "Probability of applying CutMix to a sample."})


# ---- data ------------------------------------------------------------------------------------------------


def to_tensor(image: Any, channels: int) -> torch.Tensor:
    """PIL image -> float [C, H, W] in [0, 1], with the model's channels (the loader's one conversion)."""
    (image,) = convert_images([image], channels)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(img[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def random_resized_crop(
    img: torch.Tensor, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> torch.Tensor:
    """Inception-style crop (as torchvision's RandomResizedCrop): random area and aspect ratio, resized."""
    _, h, w = img.shape
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    top, left, ch, cw = 0, 0, h, w  # fallback: the whole image
    for _ in range(10):
        area = h * w * torch.empty(1).uniform_(*scale).item()
        aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
        cw_try, ch_try = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw_try <= w and 0 < ch_try <= h:
            ch, cw = ch_try, cw_try
            top = int(torch.randint(0, h - ch + 1, (1,)))
            left = int(torch.randint(0, w - cw + 1, (1,)))
            break
    return resize(img[:, top : top + ch, left : left + cw], (size, size))


def resize_center_crop(img: torch.Tensor, size: int, crop_pct: float) -> torch.Tensor:
    _, h, w = img.shape
    short = max(size, int(size / crop_pct))
    img = resize(img, (max(short, round(h * short / w)), short) if h > w else (short, max(short, round(w * short / h))))
    _, h, w = img.shape
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top : top + size, left : left + size]


class ImageTransform:
    """Per-sample transform for `Dataset.with_transform`; training adds crop, flip and CutMix.

    CutMix pastes a box from a random *other training sample* (as timm's per-element mode), so it happens in
    the transform and the targets become soft vectors `[C]`; evaluation keeps class indices.
    """

    def __init__(
        self,
        args: DataArguments,
        image_column: str,
        size: int,
        channels: int,
        mean: list[float],
        std: list[float],
        num_labels: int,
        train_source: Dataset | None = None,
    ) -> None:
        self.args, self.image_column, self.size, self.channels = args, image_column, size, channels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.num_labels = num_labels
        self.train_source = train_source  # None: evaluation transform

    def _view(self, image: Any) -> torch.Tensor:
        img = to_tensor(image, self.channels)
        if self.train_source is None:
            img = resize_center_crop(img, self.size, self.args.crop_pct)
        else:
            img = random_resized_crop(img, self.size, (self.args.crop_min_scale, 1.0))
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return (img - self.mean) / self.std

    def _cutmix(self, img: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        other = self.train_source[int(torch.randint(len(self.train_source), ()))]
        other_img = self._view(other[self.image_column])
        lam = torch.distributions.Beta(self.args.cutmix_alpha, self.args.cutmix_alpha).sample().item()
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(self.size * cut), int(self.size * cut)
        cy, cx = int(torch.randint(self.size, ())), int(torch.randint(self.size, ()))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, self.size)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, self.size)
        img = img.clone()
        img[:, y0:y1, x0:x1] = other_img[:, y0:y1, x0:x1]
        kept = 1.0 - (y1 - y0) * (x1 - x0) / (self.size * self.size)  # the box was clipped: use its true area
        other_target = F.one_hot(torch.tensor(other[self.args.label_column]), self.num_labels).float()
        return img, kept * target + (1.0 - kept) * other_target

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        pixels, labels = [], []
        for image, label in zip(batch[self.image_column], batch[self.args.label_column]):
            img = self._view(image)
            if self.train_source is None:
                pixels.append(img)
                labels.append(torch.tensor(label))
                continue
            target = F.one_hot(torch.tensor(label), self.num_labels).float()
            if self.args.cutmix_alpha > 0 and torch.rand(()) < self.args.cutmix_prob:
                img, target = self._cutmix(img, target)
            pixels.append(img)
            labels.append(target)
        return {"pixel_values": pixels, "labels": labels}


def normalization(name_or_path: str, channels: int) -> tuple[list[float], list[float]]:
    """The teacher's image_mean/std from its preprocessor config; 0.5 / 0.5 when it has none."""
    try:
        cfg, _ = ImageProcessingMixin.get_image_processor_dict(name_or_path)
    except (OSError, ValueError):
        cfg = {}
    mean, std = cfg.get("image_mean", [0.5] * channels), cfg.get("image_std", [0.5] * channels)
    if len(mean) != channels:
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return list(mean), list(std)


def saved_image_processor(*names_or_paths: str) -> Any | None:
    """The first image processor saved with one of the models (saved with the student so it stays usable)."""
    for name in names_or_paths:
        try:
            return load_processor(name, "image")
        except ValueError:
            continue
    return None


def accuracy(p: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((p.predictions == p.label_ids).mean())}


def argmax_logits(logits: Any, labels: Any) -> torch.Tensor:
    # DeiT students with a distillation head return (logits, cls_logits, distillation_logits).
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(-1)


# ---- main ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    parser.set_defaults(
        learning_rate=1e-3,
        weight_decay=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        remove_unused_columns=False,  # the transform needs the raw image and label columns
        eval_strategy="epoch",
    )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    set_seed(training_args.seed)

    student, teacher = load_student_and_teacher(model_args, AutoModelForImageClassification)
    family = adapter_class_for_config(student.config)
    if student.config.num_labels != teacher.config.num_labels:
        raise ValueError(f"student has {student.config.num_labels} classes, teacher {teacher.config.num_labels}")

    with training_args.main_process_first(desc="loading the dataset"):
        dataset = load_source(data_args.dataset, data_args.dataset_config)
        train_ds, eval_ds = train_eval_splits(dataset, data_args, training_args.seed)
    if data_args.max_train_samples is not None:
        train_ds = train_ds.select(range(min(data_args.max_train_samples, len(train_ds))))
    if data_args.max_eval_samples is not None:
        eval_ds = eval_ds.select(range(min(data_args.max_eval_samples, len(eval_ds))))
    image_column = data_args.image_column or next(
        (k for k, f in train_ds.features.items() if isinstance(f, Image)), "image"
    )
    for split in (train_ds, eval_ds):
        check_columns(split, [image_column, data_args.label_column])

    (size, width), channels = family.image_size(student.config), family.num_channels(student.config)
    if size != width:
        raise ValueError(f"the distillation transforms make square images; the student's images are {size}×{width}")
    mean, std = normalization(model_args.teacher, channels)
    common = dict(
        args=data_args, image_column=image_column, size=size, channels=channels, mean=mean, std=std,
        num_labels=student.config.num_labels,
    )
    train_set = train_ds.with_transform(ImageTransform(**common, train_source=train_ds))
    eval_set = eval_ds.with_transform(ImageTransform(**common))

    callbacks = [EMACallback(model_args.ema_decay)] if model_args.ema_decay is not None else None
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        alpha=model_args.alpha,
        temperature=model_args.temperature,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=saved_image_processor(model_args.student, model_args.teacher),
        compute_metrics=accuracy,
        preprocess_logits_for_metrics=argmax_logits,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()  # the student only (EMA weights with --ema_decay), with its image processor
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


if __name__ == "__main__":
    main()
