"""Proxy sets at real scale: a streamed source is read only as far as the proxy needs, text is tokenized
document by document, and images reach the model with the channels it expects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset
from PIL import Image as PILImage
from tiny import randomize, tiny_tokenizer, vit_config
from transformers import ViTForImageClassification, ViTImageProcessor

from upvit_hf import ImportanceScores, UPPruner
from upvit_hf.cli import main
from upvit_hf.evaluation import evaluate_accuracy, text_documents
from upvit_hf.proxy import document_proxy, image_proxy

PROCESSOR = dict(size={"height": 8, "width": 8})


def rgb_images(n: int, seed: int) -> list[PILImage.Image]:
    rng = np.random.default_rng(seed)
    return [PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n)]


def test_streamed_images_read_about_size_plus_buffer():
    produced = []

    def rows(n):
        for i, image in enumerate(rgb_images(n, 0)):
            produced.append(i)
            yield {"image": image, "label": i % 5}

    stream = IterableDataset.from_generator(rows, gen_kwargs={"n": 2000})
    batches = image_proxy(stream, ViTImageProcessor(**PROCESSOR), size=6, seed=0, batch_size=4, buffer_size=10)
    assert [len(b["pixel_values"]) for b in batches] == [4, 2]
    assert len(produced) <= 6 + 10 + 2, len(produced)  # never the split (2000 rows)


def test_streamed_proxy_is_seeded_and_shuffled():
    stream = IterableDataset.from_generator(lambda: ({"image": im, "label": 0} for im in rgb_images(40, 1)))
    processor = ViTImageProcessor(**PROCESSOR)
    first = image_proxy(stream, processor, size=5, seed=3, buffer_size=20)[0]["pixel_values"]
    again = image_proxy(stream, processor, size=5, seed=3, buffer_size=20)[0]["pixel_values"]
    other = image_proxy(stream, processor, size=5, seed=4, buffer_size=20)[0]["pixel_values"]
    in_order = processor(images=rgb_images(40, 1)[:5], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other) and not torch.equal(first, in_order)


class CountingTokenizer:
    """Wraps a tokenizer and counts the characters it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.chars = tokenizer, 0, 0

    def __call__(self, text, **kwargs):
        self.calls += 1
        self.chars += len(text)
        return self.tokenizer(text, **kwargs)


def test_text_is_tokenized_only_as_far_as_needed(tmp_path):
    line = "the cat sat on a mat\n"  # 6 tokens
    (tmp_path / "corpus.txt").write_text(line * 20000)
    tokenizer = CountingTokenizer(tiny_tokenizer())
    batches = document_proxy(text_documents(tmp_path / "corpus.txt"), tokenizer, size=4, seq_len=9, batch_size=3)
    assert tokenizer.calls == 6 and tokenizer.chars == 6 * len(line)  # 36 tokens for 4 x 9: six lines
    expected = tiny_tokenizer()(line * 6, return_tensors="pt")["input_ids"][0].view(4, 9)
    torch.testing.assert_close(torch.cat([b["input_ids"] for b in batches]), expected, rtol=0, atol=0)
    assert [tuple(b["attention_mask"].shape) for b in batches] == [(3, 9), (1, 9)]


def test_dataset_documents_are_seeded_and_short_text_falls_back_to_random_windows(tmp_path):
    docs = [f"the cat {'big ' * i}dog" for i in range(50)]
    Dataset.from_dict({"text": docs}).save_to_disk(tmp_path / "docs")
    tokenizer = CountingTokenizer(tiny_tokenizer())
    order = list(text_documents(tmp_path / "docs", split="train", seed=0))
    assert sorted(order) == sorted(docs) and order != docs
    batches = document_proxy(text_documents(tmp_path / "docs", seed=0), tokenizer, size=2, seq_len=4)
    lengths = np.cumsum([len(doc.split()) for doc in order])  # one token per word
    needed = int(np.searchsorted(lengths, 8)) + 1  # the first documents (in shuffled order) holding 8 tokens
    assert tokenizer.calls == needed
    expected = tiny_tokenizer()(" ".join(order[:needed]))["input_ids"][:8]
    assert torch.cat([b["input_ids"] for b in batches]).flatten().tolist() == expected

    short = document_proxy(iter(["the cat sat"]), tiny_tokenizer(), size=5, seq_len=2, seed=1)
    windows = torch.cat([b["input_ids"] for b in short])
    ids = tiny_tokenizer()("the cat sat")["input_ids"]
    assert windows.shape == (5, 2) and all(row.tolist() in ([ids[0], ids[1]], [ids[1], ids[2]]) for row in windows)
    with pytest.raises(ValueError, match="column"):
        list(text_documents(tmp_path / "docs", text_column="body"))


@pytest.fixture
def grey_vit(tmp_path):
    """A 1-channel ViT whose processor normalizes one channel, and an RGB image dataset."""
    randomize(ViTForImageClassification(vit_config(num_channels=1))).save_pretrained(tmp_path / "grey")
    ViTImageProcessor(**PROCESSOR, image_mean=[0.5], image_std=[0.25]).save_pretrained(tmp_path / "grey")
    features = Features({"image": Image(), "label": ClassLabel(num_classes=5)})
    DatasetDict(train=Dataset.from_dict({"image": rgb_images(6, 2), "label": [0, 1, 2, 3, 4, 0]},
                                        features=features)).save_to_disk(tmp_path / "data")
    return tmp_path


def test_score_and_evaluate_a_one_channel_vit(grey_vit, tmp_path):
    main(["score", "--model", str(grey_vit / "grey"), "--dataset", str(grey_vit / "data"), "--proxy-size", "6",
          "--batch-size", "4", "--output", str(tmp_path / "s.safetensors")])
    scores = ImportanceScores.load(tmp_path / "s.safetensors")

    # Reference: the same six images converted to greyscale by hand and normalized as (x/255 - 0.5) / 0.25.
    model = ViTForImageClassification.from_pretrained(grey_vit / "grey").eval()
    pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32) / 255)[None]
                          for im in rgb_images(6, 2)])
    reference = UPPruner(model).score([{"pixel_values": (pixels - 0.5) / 0.25}], show_progress=False)
    for mine, theirs in zip([scores.residual, *scores.attention, *scores.ffn],
                            [reference.residual, *reference.attention, *reference.ffn]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)

    data = Dataset.from_dict({"image": rgb_images(6, 2), "label": [0, 1, 2, 3, 4, 0]})
    result = evaluate_accuracy(model, data, ViTImageProcessor.from_pretrained(grey_vit / "grey"), progress=False,
                               top_k=(5,))
    assert result["num_samples"] == 6 and result["top5"] == 1.0  # 5 classes: every sample is a top-5 hit


def test_score_streams_a_hub_dataset(local_hub, tmp_path, monkeypatch):
    """`upvit score --dataset ORG/NAME` reads a (local) Hub dataset by streaming; the scores are those of the
    seeded streamed sample (the same `shuffle(seed, buffer).take(n)` read independently)."""
    import datasets.config
    from datasets import load_dataset
    from huggingface_hub import HfApi

    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", local_hub.url)  # read by `datasets` at import
    features = Features({"image": Image(), "label": ClassLabel(num_classes=5)})
    images = rgb_images(40, 4)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    for shard in range(4):
        rows = range(10 * shard, 10 * shard + 10)
        Dataset.from_dict({"image": [images[i] for i in rows], "label": [i % 5 for i in rows]},
                          features=features).to_parquet(tmp_path / "repo" / "data" / f"train-{shard:05d}-of-00004.parquet")
    api = HfApi(endpoint=local_hub.url, token="hf_local_test_token")
    api.create_repo("upvit-tester/images", repo_type="dataset")
    api.upload_folder(repo_id="upvit-tester/images", repo_type="dataset", folder_path=tmp_path / "repo")

    randomize(ViTForImageClassification(vit_config())).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(**PROCESSOR).save_pretrained(tmp_path / "vit")
    main(["score", "--model", str(tmp_path / "vit"), "--dataset", "upvit-tester/images", "--proxy-size", "5",
          "--seed", "3", "--output", str(tmp_path / "s.safetensors")])
    scores = ImportanceScores.load(tmp_path / "s.safetensors")

    stream = load_dataset("upvit-tester/images", split="train", streaming=True)
    picked = [row["image"] for row in stream.shuffle(seed=3, buffer_size=1000).take(5)]
    pixels = ViTImageProcessor(**PROCESSOR)(images=picked, return_tensors="pt")["pixel_values"]
    model = ViTForImageClassification.from_pretrained(tmp_path / "vit").eval()
    reference = UPPruner(model).score([{"pixel_values": pixels}], show_progress=False)
    assert scores.meta["proxy_size"] == 5
    for mine, theirs in zip([scores.residual, *scores.ffn], [reference.residual, *reference.ffn]):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)
