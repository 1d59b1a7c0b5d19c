"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from hub_server import LocalHub


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """The test models are tiny: one op is too small to split across cores, and spinning OpenMP threads
    on a busy 2-core machine made tests many times slower. Subprocesses inherit OMP_NUM_THREADS."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = env


# ---- local Hub (tests/hub_server.py) ---------------------------------------------------------------
@pytest.fixture
def local_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A running in-memory Hub, with huggingface_hub/transformers pointed at it for this test only.

    Environment variables are set for subprocesses (a fresh interpreter reads them at import); in this
    process the values huggingface_hub froze at import time are patched too, and transformers' cached HfApi is
    dropped so it is rebuilt on the local endpoint.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api
    import transformers.utils.hub as transformers_hub

    hub = LocalHub().start()
    home = tmp_path_factory.mktemp("hf_home")
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "hf_local_test_token",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # restored after the test
    try:
        yield hub
    finally:
        hub.stop()
