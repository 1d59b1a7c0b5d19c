"""examples/prune_vit.py end to end, offline: local model folder, local datasets, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from tiny import randomize, vit_config
from transformers import AutoModelForImageClassification, ViTForImageClassification, ViTImageProcessor

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "prune_vit.py"


def random_images(n: int, seed: int = 0) -> list[PILImage.Image]:
    rng = np.random.default_rng(seed)
    return [PILImage.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def local_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    model = randomize(ViTForImageClassification(vit_config()))
    model.save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(root / "model")
    features = Features({"image": Image(), "label": ClassLabel(num_classes=5)})
    Dataset.from_dict({"image": random_images(10), "label": list(range(5)) * 2}, features=features) \
        .save_to_disk(root / "saved")
    for i, image in enumerate(random_images(6, seed=1)):
        (root / "folder" / "train" / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        image.save(root / "folder" / "train" / f"class{i % 2}" / f"{i}.png")
    return root


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.mark.parametrize("dataset", ["saved", "folder"])
def test_prunes_offline_from_local_paths(local_assets, tmp_path, dataset):
    out = run("--model", str(local_assets / "model"), "--dataset", str(local_assets / dataset), "--proxy-size", "4",
              "--batch-size", "3", "--hidden-size", "8", "--num-heads", "2", "--intermediate-size", "12",
              "--output", str(tmp_path / "small"), "--save-scores", str(tmp_path / "scores.safetensors"))
    assert out.returncode == 0, out.stderr
    small = AutoModelForImageClassification.from_pretrained(tmp_path / "small")
    assert (small.config.hidden_size, small.config.num_attention_heads) == (8, 2)
    assert small.config.upvit_pruning["proxy_size"] == 4
    again = run("--model", str(local_assets / "model"), "--scores", str(tmp_path / "scores.safetensors"),
                "--ratio", "0.5", "--output", str(tmp_path / "half"))
    assert again.returncode == 0, again.stderr
    assert AutoModelForImageClassification.from_pretrained(tmp_path / "half").config.hidden_size == 8


def test_bad_input_is_one_line_and_leaves_nothing(local_assets, tmp_path):
    out = run("--model", str(local_assets / "model"), "--dataset", str(local_assets / "saved"), "--proxy-size", "2",
              "--hidden-size", "8", "--num-heads", "3", "--intermediate-size", "12", "--output", str(tmp_path / "x"))
    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "must divide" in last_line
    assert "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []
