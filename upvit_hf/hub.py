"""Publishing a saved pruned model to the Hugging Face Hub with a generated model card."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, HfApi

from .model_card import write_model_card

DEFAULT_COMMIT_MESSAGE = "Upload UP-ViTs pruned model (upvit-hf)"


def hub_api(token: str | None = None, endpoint: str | None = None) -> HfApi:
    """An HfApi on `endpoint`, else on `HF_ENDPOINT` read now (huggingface_hub reads it only at import)."""
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def push_pruned_model(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    metrics: Mapping[str, Any] | None = None,
    original_stats: Mapping[str, Any] | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Refresh the folder's model card, create the repo if needed and upload the folder as one commit.

    `metrics` / `original_stats` update the card; when omitted the values already in the card are kept.
    """
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder; save the pruned model with save_pretrained first")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} has no config.json; expected a folder written by save_pretrained")
    write_model_card(path, metrics, original_stats, repo_id=repo_id)
    api = hub_api(token, endpoint)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(path),
        commit_message=commit_message,
        revision=revision,
    )
