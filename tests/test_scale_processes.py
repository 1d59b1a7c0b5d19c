"""Scoring across processes and across a killed run: 2 gloo processes equal one; a SIGKILLed run resumes.

Run as a script this file is the worker of those tests:
`torchrun --nproc_per_node 2 tests/test_scale_processes.py --ddp-worker DIR` scores in two processes,
`python tests/test_scale_processes.py --kill-worker DIR` scores until it kills itself after a checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny import gpt2_config, image_batches, randomize, token_batches, vit_config
from transformers import GPT2LMHeadModel, ViTForImageClassification, ViTImageProcessor

from upvit_hf import ImportanceScores, UPPruner

ROOT = Path(__file__).resolve().parents[1]
KILL_AT, EVERY = 5, 2  # the killed run checkpoints after batches 1 and 3, and dies asking for batch 5


def vit(dtype: torch.dtype, layers: int = 2) -> ViTForImageClassification:
    return randomize(ViTForImageClassification(vit_config(num_hidden_layers=layers))).to(dtype)


def vit_batches() -> list[dict[str, torch.Tensor]]:
    return image_batches(vit_config(), sizes=(3, 2, 1, 2, 3))  # 5 batches: the shards are uneven


def gpt2() -> GPT2LMHeadModel:
    return randomize(GPT2LMHeadModel(gpt2_config())).double()


def gpt2_batches() -> list[dict[str, torch.Tensor]]:
    return token_batches(gpt2_config(), lengths=((6, 4), (5, 6, 3), (6,)))


def flat(scores) -> torch.Tensor:
    return torch.cat([scores.residual, *scores.attention, *scores.ffn])


def runs(checkpoint: Path | None = None) -> dict[str, torch.Tensor]:
    """What both the 2-process worker and the single-process reference compute."""
    options = {"show_progress": False}
    float64 = UPPruner(vit(torch.float64)).score(vit_batches(), variants_per_pass=7, **options,
                                                 **({"checkpoint": checkpoint} if checkpoint else {}))
    float32 = UPPruner(vit(torch.float32)).score(vit_batches(), **options)
    blocks = UPPruner(gpt2()).score_blocks(gpt2_batches(), **options)
    shallow = UPPruner(vit(torch.float64, layers=3)).prune_blocks(vit_batches(), 2, **options)
    return {
        "float64": flat(float64), "float32": flat(float32), "proxy_size": torch.tensor(float64.meta["proxy_size"]),
        "blocks": torch.cat([blocks.block, blocks.hybrid]),
        **{f"shallow.{k}": v for k, v in shallow.state_dict().items()},
    }


def _ddp_worker(out: Path) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    torch.save(runs(out / "vit64.ckpt"), out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _cli_worker(out: Path) -> None:
    """`upvit score` joins the group itself, as under `torchrun -m upvit_hf.cli`. Its own launch: a second gloo
    group in the same processes can read the first group's stale addresses from the store and fail to connect."""
    from upvit_hf.cli import main

    torch.set_num_threads(1)
    main(["score", "--model", str(out / "model"), "--dataset", str(out / "data"), "--proxy-size", "10",
          "--batch-size", "3", "--output", str(out / "cli.safetensors")])
    assert not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def cli_assets(root: Path) -> None:
    from datasets import Dataset, Features, Image
    from PIL import Image as PILImage

    vit(torch.float32).save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    images = [PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(10)]
    Dataset.from_dict({"image": images}, features=Features({"image": Image()})).save_to_disk(root / "data")


@pytest.mark.slow
def test_two_processes_score_like_one(tmp_path):
    from upvit_hf.cli import main

    cli_assets(tmp_path)
    for worker in ("--ddp-worker", "--cli-worker"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), str(Path(__file__).resolve()), worker, str(tmp_path)]
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    single = runs()
    for rank in range(2):
        shared = torch.load(tmp_path / f"rank{rank}.pt")
        assert shared.keys() == single.keys()
        assert int(shared["proxy_size"]) == int(single["proxy_size"]) == 11
        torch.testing.assert_close(shared["float64"], single["float64"], rtol=1e-9, atol=0)
        torch.testing.assert_close(shared["float32"], single["float32"], rtol=1e-6, atol=0)
        torch.testing.assert_close(shared["blocks"], single["blocks"], rtol=1e-9, atol=0)
        for key in (k for k in single if k.startswith("shallow.")):
            torch.testing.assert_close(shared[key], single[key], rtol=0, atol=0)
    # under data parallelism each rank keeps its own checkpoint of its own shard (batches 0, 2, 4 / 1, 3)
    for rank, done in ((0, {0, 2, 4}), (1, {1, 3})):
        saved = torch.load(tmp_path / f"vit64.ckpt.rank{rank}-of-2", weights_only=True)
        assert set(saved["done"]) == done and saved["key"]["world_size"] == 2

    # upvit score under torchrun: rank 0 wrote the file, equal to one process's
    main(["score", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / "data"), "--proxy-size", "10",
          "--batch-size", "3", "--output", str(tmp_path / "single.safetensors")])
    shared, alone = (ImportanceScores.load(tmp_path / f"{n}.safetensors") for n in ("cli", "single"))
    assert shared.meta["proxy_size"] == alone.meta["proxy_size"] == 10
    torch.testing.assert_close(flat(shared), flat(alone), rtol=1e-6, atol=0)
    assert not list(tmp_path.glob(".cli.safetensors.tmp-*"))


# ---- a killed run resumes -----------------------------------------------------------------------------------


class KillingProxy:
    """The ViT proxy batches; asked for batch KILL_AT (a checkpoint is on disk by then) it SIGKILLs its process."""

    def __init__(self, checkpoint: Path | None):
        self.batches, self.checkpoint = vit_batches() + vit_batches()[:2], checkpoint

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            if self.checkpoint is not None and index == KILL_AT:
                assert self.checkpoint.exists()
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch


def _kill_worker(out: Path) -> None:
    torch.set_num_threads(1)
    UPPruner(vit(torch.float32)).score(KillingProxy(out / "run.ckpt"), show_progress=False,
                                       checkpoint=out / "run.ckpt", checkpoint_every=EVERY)
    sys.exit("the scoring run was not killed")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_scores(tmp_path):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--kill-worker", str(tmp_path)]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stdout[-3000:] + result.stderr[-3000:]
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)
    assert set(saved["done"]) == {0, 1, 2, 3}  # the last save before the kill

    resumed = UPPruner(vit(torch.float32)).score(KillingProxy(None), show_progress=False,
                                                 checkpoint=tmp_path / "run.ckpt", checkpoint_every=EVERY)
    uninterrupted = UPPruner(vit(torch.float32)).score(KillingProxy(None), show_progress=False)
    assert resumed.meta["proxy_size"] == uninterrupted.meta["proxy_size"] == 16
    torch.testing.assert_close(flat(resumed), flat(uninterrupted), rtol=1e-12, atol=0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--ddp-worker":
        _ddp_worker(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--cli-worker":
        _cli_worker(Path(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "--kill-worker":
        _kill_worker(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: torchrun --nproc_per_node 2 {sys.argv[0]} --ddp-worker|--cli-worker DIR | "
                 f"{sys.argv[0]} --kill-worker DIR")
