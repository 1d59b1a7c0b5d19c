"""Channel importance scores: the expensive product of scoring, kept so pruning can be re-run cheaply."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .adapters import AnyWidths, layer_widths
from .atomic import atomic_path


def save_scores_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *,
                     overwrite: bool = False) -> None:
    """Safetensors written atomically, `meta` as JSON in its metadata (tensors cloned: scores built by hand
    may share storage, which safetensors refuses). An existing file is kept unless `overwrite`."""
    tensors = {name: tensor.detach().cpu().clone() for name, tensor in tensors.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={"upvit_meta": json.dumps(meta)})


def load_scores_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a scores file; ValueError for a missing, unreadable or non-finite one."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ValueError(f"scores file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("upvit_meta", "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not a readable scores file: {str(err).splitlines()[0]}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r} is not an upvit scores file (its metadata is not a JSON object)")
    check_finite(tensors, str(path))
    return tensors, meta


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """ValueError naming the first tensors that hold NaN or infinite scores (they would rank arbitrarily)."""
    bad = [name for name, tensor in tensors.items() if not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ValueError(f"{source} holds NaN or infinite scores in {', '.join(bad[:3])}"
                         + (f" and {len(bad) - 3} more" if len(bad) > 3 else ""))


def model_identity(model: Any) -> str:
    """What scores record as their model: the resolved folder of a local model, else its hub id or class name."""
    name = str(getattr(model, "name_or_path", "") or "")
    if name and os.path.exists(os.path.expanduser(name)):
        return str(Path(name).expanduser().resolve())
    return name or type(model).__name__


def pack_residual(stages: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Per-stage residual scores in the `ImportanceScores.residual` shape: a plain model's single tensor, or
    the list of a hierarchical model's stages."""
    return stages[0] if len(stages) == 1 else list(stages)


@dataclass
class ImportanceScores:
    """Scores of the three UP-ViTs components; larger means more important.

    `residual` is one tensor for a plain model and a list with one tensor per stage for a hierarchical one
    (PVTv2: each stage has its own residual width). `attention[l][i]` scores output dim i of layer l's q/k/v
    projections; `attention` and `ffn` are flat over all layers, stage by stage. `meta` records how the
    scores were made (method, proxy size, model) and travels with the file.
    """

    residual: torch.Tensor | list[torch.Tensor]
    attention: list[torch.Tensor]
    ffn: list[torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.attention) != len(self.ffn):
            raise ValueError(
                f"attention and ffn scores must cover the same layers, got {len(self.attention)} and {len(self.ffn)}"
            )

    @property
    def num_layers(self) -> int:
        return len(self.ffn)

    @property
    def residual_stages(self) -> list[torch.Tensor]:
        """The residual scores of every stage (a plain model's single tensor is its one stage)."""
        return list(self.residual) if isinstance(self.residual, (list, tuple)) else [self.residual]

    def _tensors(self) -> dict[str, torch.Tensor]:
        if isinstance(self.residual, torch.Tensor):  # plain models: the one-stage format, unchanged
            tensors = {"residual": self.residual}
        else:
            tensors = {f"residual.{stage}": tensor for stage, tensor in enumerate(self.residual)}
        for name, per_layer in (("attention", self.attention), ("ffn", self.ffn)):
            tensors.update({f"{name}.{layer}": tensor for layer, tensor in enumerate(per_layer)})
        return tensors

    def check_origin(self, model: Any, widths: AnyWidths) -> None:
        """ValueError when the scores record another model (or other widths) than `model`: scores of a
        different checkpoint with the same shapes would prune it by meaningless rankings."""
        recorded_model, recorded_widths = self.meta.get("model"), self.meta.get("widths")
        if recorded_model is not None and recorded_model != model_identity(model):
            raise ValueError(f"the scores were computed on {recorded_model!r}, not on {model_identity(model)!r} "
                             "(pass force / --force to use them anyway)")
        if recorded_widths is not None and recorded_widths != widths.as_dict():
            raise ValueError(f"the scores were computed on a model with widths {recorded_widths}, this one has "
                             f"{widths.as_dict()} (pass force / --force to use them anyway)")

    def check_matches(self, widths: AnyWidths) -> None:
        """ValueError unless these scores are finite and have the shapes of a model with `widths`."""
        check_finite(self._tensors(), "the scores")
        problems = []
        stages = self.residual_stages
        if len(stages) != len(widths.stages):
            problems.append(f"they have residual scores for {len(stages)} stage(s), the model has {len(widths.stages)}")
        for stage, (scores, stage_widths) in enumerate(zip(stages, widths.stages)):
            if tuple(scores.shape) != (stage_widths.hidden_size,):
                where = f" of stage {stage}" if len(stages) > 1 else ""
                problems.append(f"residual scores{where} have shape {tuple(scores.shape)}, "
                                f"expected ({stage_widths.hidden_size},)")
        if self.num_layers != widths.num_hidden_layers:
            problems.append(f"they cover {self.num_layers} layers, the model has {widths.num_hidden_layers}")
        else:
            for name, per_layer, width_of in (
                ("attention", self.attention, lambda w: w.attention_width),
                ("ffn", self.ffn, lambda w: w.intermediate_size),
            ):
                expected = [width_of(layer_widths(widths, layer)) for layer in range(self.num_layers)]
                bad = [layer for layer, s in enumerate(per_layer) if tuple(s.shape) != (expected[layer],)]
                if bad:
                    shape = tuple(per_layer[bad[0]].shape)
                    problems.append(f"{name} scores of layer {bad[0]} have shape {shape}, expected ({expected[bad[0]]},)")
        if problems:
            raise ValueError("scores do not match the model: " + "; ".join(problems))

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save as safetensors (atomically), with `meta` as JSON in the file's metadata; an existing file is
        refused (ValueError) unless `overwrite`."""
        save_scores_file(path, self._tensors(), self.meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImportanceScores:
        tensors, meta = load_scores_file(path)
        num_stages = sum(1 for key in tensors if key.startswith("residual."))
        if "residual" not in tensors and not num_stages:
            raise ValueError(f"{str(path)!r} is not an upvit scores file (no 'residual' tensor)")
        num_layers = sum(1 for key in tensors if key.startswith("ffn."))
        missing = [key for i in range(num_layers) for key in (f"attention.{i}", f"ffn.{i}") if key not in tensors]
        missing += [f"residual.{s}" for s in range(num_stages) if "residual" not in tensors and f"residual.{s}" not in tensors]
        if missing:
            raise ValueError(f"{str(path)!r} is not a complete upvit scores file (missing {', '.join(missing[:3])})")
        return cls(
            residual=tensors["residual"] if "residual" in tensors else [tensors[f"residual.{s}"] for s in range(num_stages)],
            attention=[tensors[f"attention.{i}"] for i in range(num_layers)],
            ffn=[tensors[f"ffn.{i}"] for i in range(num_layers)],
            meta=meta,
        )


@dataclass
class BlockScores:
    """Importance of the removable depth units; larger means more important.

    `block[i]` is Σ KL over the proxy set with block i skipped (both of its residual branches);
    `hybrid[i]` with the FFN half of block i and the attention half of block i+1 skipped. In a hierarchical
    model a hybrid across two stages is scored likewise (the next stage's patch embedding still runs between
    its branches) but is no removable unit: depth pruning never picks it. Same semantics
    as channel scores (natural log, q the unpruned model's output, positions weighted for language models).
    """

    block: torch.Tensor
    hybrid: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.block.dim() != 1 or self.hybrid.dim() != 1 or len(self.hybrid) != max(len(self.block) - 1, 0):
            raise ValueError(
                f"block scores need shapes (L,) and (L-1,), "
                f"got {tuple(self.block.shape)} and {tuple(self.hybrid.shape)}"
            )

    @property
    def num_layers(self) -> int:
        return len(self.block)

    def by_branch(self) -> torch.Tensor:
        """All 2·L−1 unit scores in branch order: block 0, hybrid 0, block 1, hybrid 1, …, block L−1."""
        merged = self.block.new_empty(2 * self.num_layers - 1)
        merged[0::2] = self.block
        merged[1::2] = self.hybrid
        return merged

    def least_important(self):
        """The unit whose removal changes the output least (the earliest one on ties)."""
        from .depth import BlockUnit

        if self.num_layers == 0:
            raise ValueError("there are no block scores to choose from")
        return BlockUnit(int(torch.argmin(self.by_branch())))

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Save as safetensors (atomically), with `meta` as JSON in the file's metadata; an existing file is
        refused (ValueError) unless `overwrite`."""
        save_scores_file(path, {"block": self.block, "hybrid": self.hybrid}, self.meta, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BlockScores:
        tensors, meta = load_scores_file(path)
        if "block" not in tensors or "hybrid" not in tensors:
            raise ValueError(f"{str(path)!r} is not an upvit block scores file (no 'block'/'hybrid' tensors)")
        return cls(block=tensors["block"], hybrid=tensors["hybrid"], meta=meta)
