"""Model cards (README.md) for pruned models, generated from the pruning record in their config.

The record (`config.upvit_pruning`) travels with the weights, so a card can be rebuilt from a saved folder at
any time. Metrics and before/after statistics are also stored in the card's YAML (`upvit:` key) so refreshing
a card before an upload keeps numbers measured earlier.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from .adapters import REGISTRY, ModelAdapter
from .atomic import atomic_path
from .evaluation.complexity import count_parameters, model_stats
from .record import RECORD_KEY

CARD_KEY = "upvit"  # YAML key holding metrics/stats so a refreshed card keeps them
PAPER = "A Unified Pruning Framework for Vision Transformers (Hao Yu & Jianxin Wu, Sci. China Inf. Sci., 2023)"

_WIDTH_LABELS = {
    "hidden_size": "hidden size (residual channels)",
    "num_attention_heads": "attention heads",
    "head_dim": "head dimension",
    "intermediate_size": "FFN intermediate size",
    "num_hidden_layers": "blocks",
}
_METHODS = {
    "kl": "KL divergence between the original output and the output with the channel removed (paper Eq. 1)",
}
_KNOWN_RECORD_KEYS = {"base_model", "method", "proxy_size", "original", "pruned", "upvit_hf_version"}

def _config_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    raise TypeError(f"Expected a config or a mapping, got {type(config).__name__}")


def pruning_record(config: Any) -> dict[str, Any]:
    """The `upvit_pruning` record of a config (object or dict); ValueError when the model was not pruned."""
    record = _config_dict(config).get(RECORD_KEY)
    if not isinstance(record, Mapping):
        raise ValueError(f"The config has no '{RECORD_KEY}' record: not a model pruned by upvit-hf")
    return dict(record)


def _family(model: nn.Module | Any) -> tuple[type[ModelAdapter], type] | None:
    """The adapter and model class of a model (or of the class its config's `architectures` names); None for a
    config no adapter knows."""
    config = model.config if isinstance(model, nn.Module) else model
    adapter = REGISTRY.get(_config_dict(config).get("model_type"))
    if adapter is None:
        return None
    if isinstance(model, nn.Module):
        return adapter, type(model)
    if isinstance(config, Mapping):
        from transformers import AutoConfig

        config = AutoConfig.for_model(config["model_type"], architectures=config.get("architectures"))
    model_class = adapter.model_class_for_config(config)
    return (adapter, model_class) if model_class is not None else None


def infer_pipeline_tag(auto_class: type | None) -> str | None:
    """The Hub pipeline tag of the transformers pipeline that loads its model with `auto_class` (None for
    backbones, which several pipelines share, and for classes no pipeline loads)."""
    from transformers import AutoModel
    from transformers.pipelines import SUPPORTED_TASKS

    if auto_class is None or auto_class is AutoModel:
        return None
    return next((task for task, spec in SUPPORTED_TASKS.items() if auto_class in spec.get("pt", ())), None)


def _usage_section(found: tuple[type[ModelAdapter], type] | None, auto_class: type | None, repo: str,
                   has_tokenizer: bool = False) -> list[str]:
    """How to load the model: its Auto class (or its own class where no Auto class maps it). A family
    transformers does not ship loads with the code saved next to its weights (`trust_remote_code=True`, also for
    its tokenizer, since `AutoTokenizer` reads the custom config) or after `import upvit_hf`."""
    loader = (auto_class or found[1]).__name__ if found else "AutoModel"
    remote = bool(found and found[0].needs_remote_code)
    trust = ", trust_remote_code=True" if remote else ""
    tokenizer = remote and has_tokenizer
    lines = ["## Usage", "", "```python", f"from transformers import {loader}{', AutoTokenizer' if tokenizer else ''}",
             "", f'model = {loader}.from_pretrained("{repo}"{trust})']
    if tokenizer:
        lines.append(f'tokenizer = AutoTokenizer.from_pretrained("{repo}"{trust})')
    lines += ["```", ""]
    if remote:
        lines += [f"transformers has no {found[1].__name__}: the checkpoint carries its code. With upvit-hf installed, "
                  "`import upvit_hf` registers it instead and `trust_remote_code` is not needed.", ""]
    return lines


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:g}"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{int(value):,}" if value.is_integer() and abs(value) >= 1e4 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):  # per-stage widths of hierarchical models
        return " / ".join(_fmt(v) for v in value)
    return str(value)


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name} / "))
        else:
            flat[name] = value
    return flat


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy/torch scalars to Python) so the YAML block stays readable."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def _widths_section(record: Mapping[str, Any]) -> list[str]:
    original, pruned = record.get("original") or {}, record.get("pruned") or {}
    keys = [k for k in _WIDTH_LABELS if k in original or k in pruned]
    keys += sorted((set(original) | set(pruned)) - set(keys))
    if not keys:
        return []
    lines = ["## Widths", "", "| | original | pruned |", "|---|---:|---:|"]
    for key in keys:
        label = _WIDTH_LABELS.get(key, key)
        lines.append(f"| {label} | {_fmt(original.get(key, '–'))} | {_fmt(pruned.get(key, '–'))} |")
    return lines + [""]


def _stats_section(original: Mapping[str, Any], pruned: Mapping[str, Any]) -> list[str]:
    rows = []
    for key, label in (("params", "parameters"), ("flops", "FLOPs per sample")):
        before, after = original.get(key), pruned.get(key)
        if before is None and after is None:
            continue
        shape = pruned.get("flops_input") or original.get("flops_input")
        if key == "flops" and shape:
            label += f" ({shape})"
        ratio = f"{before / after:.2f}×" if before and after else "–"
        cell = lambda v: f"{_human(v)} ({_fmt(v)})" if isinstance(v, (int, float)) else "–"  # noqa: E731
        rows.append(f"| {label} | {cell(before)} | {cell(after)} | {ratio} |")
    if not rows:
        return []
    header = ["## Size and cost", "", "| | original | pruned | reduction |", "|---|---:|---:|---:|"]
    note = ["", "FLOPs count matmul/attention kernels (2 per multiply-add) with `torch.utils.flop_counter`.", ""]
    return header + rows + note


def _setup_section(record: Mapping[str, Any]) -> list[str]:
    lines = ["## Pruning set-up", ""]
    method = record.get("method")
    if method is not None:
        lines.append(f"- Channel scores: `{method}` — {_METHODS.get(str(method), 'see upvit-hf documentation')}")
    if record.get("proxy_size") is not None:
        lines.append(f"- Proxy set: {_fmt(record['proxy_size'])} samples")
    lines.append(
        "- Structured pruning of the residual-stream, attention (heads merged in groups) and FFN channels; "
        "the result is the stock architecture with smaller widths."
    )
    for key in sorted(set(record) - _KNOWN_RECORD_KEYS):
        lines.append(f"- {key}: {_fmt(record[key]) if not isinstance(record[key], (dict, list)) else record[key]}")
    return lines + [""]


def _metrics_section(metrics: Mapping[str, Any]) -> list[str]:
    flat = _flatten(metrics)
    if not flat:
        return []
    lines = ["## Evaluation", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {_fmt(value)} |" for name, value in flat.items()]
    return lines + [""]


def build_model_card(
    model: nn.Module | Any,
    metrics: Mapping[str, Any] | None = None,
    original_stats: Mapping[str, Any] | None = None,
    pruned_stats: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    has_tokenizer: bool = False,
) -> ModelCard:
    """A model card for a pruned model (or its config / config dict), from its `upvit_pruning` record.

    `has_tokenizer`: a tokenizer is saved with the model (the usage snippet then loads it too where that needs
    `trust_remote_code`).

    Stats are dicts with `params`, `flops` (per sample) and optionally `flops_input`. `pruned_stats` default to
    counts on `model` when it is a module; `original_stats` must be passed in (the original model is gone).
    """
    config = model.config if isinstance(model, nn.Module) else model
    record = pruning_record(config)
    config_dict = _config_dict(config)
    if pruned_stats is None and isinstance(model, nn.Module):
        try:
            pruned_stats = model_stats(model)
        except Exception:  # noqa: BLE001 - FLOPs are optional in a card; params always work
            pruned_stats = {"params": count_parameters(model)}
    found = _family(model)
    auto_class = found[0].auto_class(found[1]) if found else None
    pipeline_tag = infer_pipeline_tag(auto_class)
    base_model = record.get("base_model")
    model_type = config_dict.get("model_type")
    stored = {
        "metrics": dict(metrics or {}),
        "original_stats": dict(original_stats or {}),
        "pruned_stats": dict(pruned_stats or {}),
    }
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=["pruning", "upvit", "structured-pruning", *([model_type] if model_type else [])],
        **({CARD_KEY: _plain({k: v for k, v in stored.items() if v})} if any(stored.values()) else {}),
    )

    title = repo_id.split("/")[-1] if repo_id else f"UP-ViTs pruned {base_model or model_type or 'model'}"
    base_link = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "an unrecorded base model"
    version = record.get("upvit_hf_version")
    body = [
        f"# {title}",
        "",
        f"A structurally pruned version of {base_link}, made with upvit-hf{f' {version}' if version else ''}, "
        f"an implementation of UP-ViTs: {PAPER}.",
        "",
    ]
    body += _widths_section(record)
    body += _stats_section(stored["original_stats"], stored["pruned_stats"])
    body += _setup_section(record)
    body += _metrics_section(stored["metrics"])
    body += _usage_section(found, auto_class, repo_id or "path/to/this/model", has_tokenizer)
    body += [
        "Pruned widths change the function; UP-ViTs recovers accuracy by fine-tuning with distillation "
        "from the original model.",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _saved_parameter_count(folder: Path) -> int | None:
    """Parameters in a folder's safetensors files, from their headers only (no weights are read)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                shape = handle.get_slice(key).get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                total += n
    return total


def _stored_card_values(readme: Path) -> dict[str, Any]:
    if not readme.is_file():
        return {}
    try:
        stored = ModelCard.load(readme).data.to_dict().get(CARD_KEY)
    except Exception:  # noqa: BLE001 - an unreadable old card is simply replaced
        return {}
    return stored if isinstance(stored, dict) else {}


def write_model_card(
    folder: str | os.PathLike,
    metrics: Mapping[str, Any] | None = None,
    original_stats: Mapping[str, Any] | None = None,
    pruned_stats: Mapping[str, Any] | None = None,
    *,
    model: nn.Module | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write (or refresh) `folder/README.md` for the pruned model saved there; returns the card's path.

    Values not passed are taken from the existing card; parameter counts fall back to the saved safetensors.
    """
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{folder} has no config.json; expected a folder written by save_pretrained")
    readme = folder / "README.md"
    stored = _stored_card_values(readme)
    metrics = metrics if metrics is not None else stored.get("metrics")
    original_stats = original_stats if original_stats is not None else stored.get("original_stats")
    if pruned_stats is None and model is None:
        pruned_stats = stored.get("pruned_stats")
        if not pruned_stats:
            params = _saved_parameter_count(folder)
            pruned_stats = {"params": params} if params is not None else None
    source = model if model is not None else json.loads(config_file.read_text(encoding="utf-8"))
    card = build_model_card(source, metrics, original_stats, pruned_stats, repo_id=repo_id,
                            has_tokenizer=(folder / "tokenizer_config.json").is_file())
    with atomic_path(readme, overwrite=True) as tmp:  # the card is refreshed in place, never half-written
        card.save(tmp)
    return readme
