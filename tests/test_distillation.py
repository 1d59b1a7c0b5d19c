"""DistillationTrainer (paper Eq. 2) against independent float64 references, plus end-to-end runs.

Run as a script (`torchrun --nproc_per_node 2 tests/test_distillation.py --ddp-worker DIR`) this file is
also the worker of the multi-process test.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.data import Dataset as TorchDataset
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    GPT2Config,
    GPT2LMHeadModel,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from upvit_hf.distillation import DistillationTrainer, EMACallback

ROOT = Path(__file__).resolve().parents[1]



# ---- tiny models and data --------------------------------------------------------------------------------


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random LayerNorm affines (default ones hide bugs) and larger output weights (non-flat softmax)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        out = model.get_output_embeddings() if isinstance(model, GPT2LMHeadModel) else None
        heads = [out] if out is not None else [
            m for n, m in model.named_modules() if "classifier" in n and isinstance(m, torch.nn.Linear)
        ]
        for head in heads:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.5)
    return model


def tiny_vit(seed: int, intermediate: int = 32, num_labels: int = 5) -> ViTForImageClassification:
    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=intermediate, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return _randomize(ViTForImageClassification(cfg), seed)


def tiny_deit(seed: int, with_teacher: bool, intermediate: int = 32) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = DeiTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=intermediate, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    cls = DeiTForImageClassificationWithTeacher if with_teacher else DeiTForImageClassification
    return _randomize(cls(cfg), seed)


def tiny_gpt2(seed: int, inner: int = 32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2, n_inner=inner, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )
    return _randomize(GPT2LMHeadModel(cfg), seed)


def lm_batch(n: int, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token batches with ragged -100 labels (very unequal token counts per row), position 0 included."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 40, (n, length), generator=g)
    labels = ids.clone()
    for i in range(n):
        cut = [length, 3, length - 1, 5, 2, length, 7, 4][i % 8]
        labels[i, cut:] = -100
        if i % 3 == 0:
            labels[i, 0] = -100
            labels[i, 4] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


class Rows(TorchDataset):
    """A dict-of-tensors dataset (much faster to iterate than an Arrow dataset for tiny tests)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return len(next(iter(self.batch.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.batch.items()}


def make_args(out: Path, **kw) -> TrainingArguments:
    defaults = dict(
        output_dir=str(out), use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no",
        per_device_train_batch_size=4, per_device_eval_batch_size=4, seed=0,
    )
    return TrainingArguments(**{**defaults, **kw})


# ---- independent reference ---------------------------------------------------------------------------


def reference_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    num_items: int | None = None,
) -> float:
    """Eq. 2 item by item in float64: CE(y, p) + alpha T^2 KL(q_T || p_T), summed, / items (or num_items)."""
    s, t = student_logits.double(), teacher_logits.double()
    total, n = 0.0, 0

    def term(srow: torch.Tensor, trow: torch.Tensor, target: int | torch.Tensor) -> float:
        log_p = srow - torch.logsumexp(srow, 0)
        ce = -(target.double() * log_p).sum() if isinstance(target, torch.Tensor) else -log_p[target]
        log_pt = srow / temperature - torch.logsumexp(srow / temperature, 0)
        log_qt = trow / temperature - torch.logsumexp(trow / temperature, 0)
        kl = (log_qt.exp() * (log_qt - log_pt)).sum()
        return float(ce + alpha * temperature**2 * kl)

    if s.dim() == 2:
        for i in range(s.shape[0]):
            target = labels[i] if labels.is_floating_point() else int(labels[i])
            if isinstance(target, int) and target == -100:
                continue
            total, n = total + term(s[i], t[i], target), n + 1
    else:
        for b in range(s.shape[0]):
            for pos in range(s.shape[1] - 1):  # the logits at pos predict the label at pos + 1
                target = int(labels[b, pos + 1])
                if target != -100:
                    total, n = total + term(s[b, pos], t[b, pos], target), n + 1
    return total / (n if num_items is None else num_items)


def _case(kind: str) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(6, 1, 8, 8, generator=g)
    if kind == "vit":
        labels = torch.tensor([0, 3, -100, 4, 1, 2])
        return tiny_vit(0, intermediate=16), tiny_vit(1), {"pixel_values": pixels, "labels": labels}
    if kind == "vit_soft":
        labels = torch.softmax(2 * torch.randn(6, 5, generator=g), -1)
        return tiny_vit(0, intermediate=16), tiny_vit(1), {"pixel_values": pixels, "labels": labels}
    if kind == "deit_with_teacher":
        labels = torch.tensor([0, 3, 2, 4, 1, 2])
        student, teacher = tiny_deit(0, with_teacher=True, intermediate=16), tiny_deit(1, with_teacher=False)
        return student, teacher, {"pixel_values": pixels, "labels": labels}
    if kind == "gpt2":
        return tiny_gpt2(0, inner=16), tiny_gpt2(1), lm_batch(5)
    raise AssertionError(kind)


# ---- the loss -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_items", [None, 37])
@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (2.0, 3.0)])
@pytest.mark.parametrize("kind", ["vit", "vit_soft", "deit_with_teacher", "gpt2"])
def test_compute_loss_matches_reference(kind, alpha, temperature, num_items, tmp_path):
    student, teacher, batch = _case(kind)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, alpha=alpha, temperature=temperature, args=make_args(tmp_path)
    )
    loss = trainer.compute_loss(student, dict(batch), num_items_in_batch=num_items)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = reference_loss(
            student(**inputs).logits, teacher(**inputs).logits, batch["labels"], alpha, temperature, num_items
        )
    assert loss.item() == pytest.approx(expected, rel=2e-5)
    # Normalized by the count of the whole accumulated batch = already scaled for gradient accumulation.
    assert trainer.loss_is_scaled_for_ga is (num_items is not None)

    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("kind", ["vit", "vit_soft"])
def test_label_smoothing_smooths_the_targets(kind, tmp_path):
    """TrainingArguments.label_smoothing_factor: CE against (1 - eps) * y + eps / C, hard or soft y."""
    eps, alpha = 0.1, 0.5
    student, teacher, batch = _case(kind)
    args = make_args(tmp_path, label_smoothing_factor=eps)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, alpha=alpha, args=args)
    loss = trainer.compute_loss(student, dict(batch))
    labels = batch["labels"]
    keep = torch.ones(len(labels), dtype=torch.bool) if labels.is_floating_point() else labels != -100
    targets = labels[keep] if labels.is_floating_point() else torch.nn.functional.one_hot(labels[keep], 5).double()
    with torch.no_grad():
        s = student(pixel_values=batch["pixel_values"]).logits[keep]
        t = teacher(pixel_values=batch["pixel_values"]).logits[keep]
    expected = reference_loss(s, t, (1 - eps) * targets + eps / 5, alpha, 1.0)
    assert loss.item() == pytest.approx(expected, rel=2e-5)


def test_num_items_counts_the_loss_items(tmp_path):
    """Trainer's `num_items_in_batch` must count what the loss averages over: rows, or shifted tokens."""
    student, teacher, lm = _case("gpt2")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))
    other = lm_batch(3, seed=5)
    count = trainer._get_num_items_in_batch([lm, other], torch.device("cpu"))
    assert int(count) == int((lm["labels"][:, 1:] != -100).sum() + (other["labels"][:, 1:] != -100).sum())

    student, teacher, soft = _case("vit_soft")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))
    assert int(trainer._get_num_items_in_batch([soft, soft], torch.device("cpu"))) == 12
    _, _, hard = _case("vit")
    assert int(trainer._get_num_items_in_batch([hard], torch.device("cpu"))) == 5  # one label is -100


def test_rejects_bad_arguments(tmp_path):
    student, teacher, _ = _case("vit")
    with pytest.raises(ValueError, match="teacher_model"):
        DistillationTrainer(model=student, args=make_args(tmp_path))
    with pytest.raises(ValueError, match="separate"):
        DistillationTrainer(model=student, teacher_model=student, args=make_args(tmp_path))
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(model=student, teacher_model=teacher, temperature=0.0, args=make_args(tmp_path))
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))
    with pytest.raises(ValueError, match="labels"):
        trainer.compute_loss(student, {"pixel_values": torch.randn(2, 1, 8, 8)})


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    """2 x 2 accumulated rows give the same SGD step as 4 rows at once, although their token counts differ."""
    data = Rows(lm_batch(4))
    finals = []
    for bs, ga in [(4, 1), (2, 2)]:
        student, teacher = tiny_gpt2(0, inner=16), tiny_gpt2(1)
        args = make_args(
            tmp_path / f"bs{bs}", per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
            optim="sgd", learning_rate=0.5, max_grad_norm=0.0,
        )
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, alpha=0.7, temperature=2.0, args=args, train_dataset=data
        )
        trainer.train()
        finals.append({k: v.clone() for k, v in student.state_dict().items()})
    initial = tiny_gpt2(0, inner=16).state_dict()
    assert any(not torch.equal(finals[0][k], initial[k]) for k in initial)
    for k in finals[0]:
        torch.testing.assert_close(finals[1][k], finals[0][k], rtol=1e-5, atol=1e-6)


# ---- training ------------------------------------------------------------------------------------------------


def test_train_leaves_teacher_alone_and_saves_only_the_student(tmp_path):
    alpha, temperature = 0.5, 2.0
    teacher, student = tiny_vit(1), tiny_vit(0, intermediate=16)
    teacher.train()  # the caller's choices, which the trainer must leave as they were
    teacher.classifier.weight.requires_grad_(False)
    flags_before = {name: p.requires_grad for name, p in teacher.named_parameters()}
    use_cache_before = getattr(teacher.config, "use_cache", None)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    pixels, labels = torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 5, (32,), generator=g)
    data = Rows({"pixel_values": pixels, "labels": labels})
    args = make_args(
        tmp_path / "run", max_steps=4, gradient_accumulation_steps=2, logging_steps=1, eval_strategy="steps",
        eval_steps=2, save_strategy="steps", save_steps=2, learning_rate=1e-2,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, alpha=alpha, temperature=temperature, args=args,
        train_dataset=data, eval_dataset=data,
    )
    trainer.train()

    # The teacher: untouched (values, mode, requires_grad flags, config), and never optimized.
    assert teacher.training and getattr(teacher.config, "use_cache", None) == use_cache_before
    assert {name: p.requires_grad for name, p in teacher.named_parameters()} == flags_before
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in student.parameters()}
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())

    # save_model and checkpoints hold the student alone.
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    expected = student.state_dict()
    for folder in (out, tmp_path / "run" / "checkpoint-4"):
        # transformers 5 writes its legacy key names, so compare the reloaded model and the tensor sizes.
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            sizes = sorted(f.get_slice(k).get_shape() for k in f.keys())
            assert not any("teacher" in k or "distill" in k for k in f.keys())
        assert sizes == sorted(list(v.shape) for v in expected.values()), folder
        reloaded = ViTForImageClassification.from_pretrained(folder)
        assert reloaded.config.intermediate_size == 16
        for k, v in reloaded.state_dict().items():
            assert torch.equal(v, expected[k]), (folder, k)

    # Logs: ce and kl next to loss, consistent with it; eval_ce / eval_kl next to eval_loss.
    train_logs = [h for h in trainer.state.log_history if "loss" in h]
    eval_logs = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(train_logs) == 4 and len(eval_logs) == 2
    for h in train_logs:
        assert h["loss"] == pytest.approx(h["ce"] + alpha * temperature**2 * h["kl"], rel=1e-4)
    for h in eval_logs:  # equal batches: the mean of batch means is the per-sample mean
        assert h["eval_loss"] == pytest.approx(h["eval_ce"] + alpha * temperature**2 * h["eval_kl"], rel=1e-4)


def test_student_without_labels_argument_trains_and_evaluates(tmp_path):
    """DeiTForImageClassificationWithTeacher.forward takes no `labels`: the column must survive
    remove_unused_columns and evaluation must still compute the loss."""
    from datasets import Dataset

    student, teacher = tiny_deit(0, with_teacher=True, intermediate=16), tiny_deit(1, with_teacher=False)
    data = Dataset.from_dict({"pixel_values": torch.randn(8, 1, 8, 8).numpy(), "labels": list(range(5)) + [0, 1, 2]})
    data = data.with_format("torch")
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=make_args(tmp_path, max_steps=2), train_dataset=data,
        eval_dataset=data,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_ce", "eval_kl"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_ce"] + metrics["eval_kl"], rel=1e-4)


def test_teacher_runs_under_the_students_autocast(tmp_path):
    teacher, student = tiny_vit(1), tiny_vit(0, intermediate=16)
    dtypes: dict[str, list[torch.dtype]] = {"teacher": [], "student": []}
    teacher.classifier.register_forward_hook(lambda m, i, o: dtypes["teacher"].append(o.dtype))
    student.classifier.register_forward_hook(lambda m, i, o: dtypes["student"].append(o.dtype))
    data = Rows({"pixel_values": torch.randn(8, 1, 8, 8), "labels": torch.randint(0, 5, (8,))})
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=make_args(tmp_path, bf16=True, max_steps=2),
        train_dataset=data, eval_dataset=data,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert dtypes["student"] and set(dtypes["student"]) == {torch.bfloat16}
    assert dtypes["teacher"] == dtypes["student"]
    assert math.isfinite(metrics["eval_kl"]) and math.isfinite(metrics["eval_ce"])


class _Recorder(TrainerCallback):
    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def _record(self, model: torch.nn.Module) -> None:
        self.weights.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._record(model)


def test_ema_callback_saves_the_average(tmp_path):
    decay = 0.6
    teacher, student = tiny_vit(1), tiny_vit(0, intermediate=16)
    data = Rows({"pixel_values": torch.randn(12, 1, 8, 8), "labels": torch.randint(0, 5, (12,))})
    recorder = _Recorder()
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=make_args(tmp_path, max_steps=3, learning_rate=0.05),
        train_dataset=data, callbacks=[EMACallback(decay), recorder],
    )
    trainer.train()
    ema = recorder.weights[0]
    for w in recorder.weights[1:]:
        ema = {n: decay * ema[n] + (1 - decay) * w[n] for n in ema}
    assert len(recorder.weights) == 4
    trainer.save_model(str(tmp_path / "saved"))
    saved = ViTForImageClassification.from_pretrained(tmp_path / "saved")
    for n, p in saved.named_parameters():
        torch.testing.assert_close(p, ema[n], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(ema[n], recorder.weights[-1][n]) for n in ema)


# ---- several processes ---------------------------------------------------------------------------------


def _ddp_run(out: Path, per_device: int, ga: int, **kw) -> DistillationTrainer:
    """8 rows = one optimizer step per epoch at any split, so every layout makes the same two SGD steps."""
    student, teacher = tiny_gpt2(0, inner=16), tiny_gpt2(1)
    args = make_args(
        out, per_device_train_batch_size=per_device, gradient_accumulation_steps=ga, max_steps=2, optim="sgd",
        learning_rate=0.5, max_grad_norm=0.0, logging_steps=1, **kw,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, alpha=0.7, temperature=2.0, args=args, train_dataset=Rows(lm_batch(8))
    )
    trainer.train()
    return trainer


def _ddp_worker(out: Path) -> None:
    torch.set_num_threads(1)
    trainer = _ddp_run(out / "run", per_device=2, ga=2, ddp_backend="gloo")
    rank = int(os.environ["RANK"])
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    (out / f"logs{rank}.json").write_text(json.dumps(trainer.state.log_history))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_end_with_identical_students(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        str(Path(__file__).resolve()), "--ddp-worker", str(tmp_path),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    initial = tiny_gpt2(0, inner=16).state_dict()
    single = _ddp_run(tmp_path / "single", per_device=8, ga=1).model.state_dict()
    assert any(not torch.equal(ranks[0][k], initial[k]) for k in initial)
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        # DDP averages gradients over ranks while the loss is divided by the all-rank token count: the
        # trainer must undo that average, as Trainer does, to match one process seeing all rows.
        torch.testing.assert_close(ranks[0][k], single[k], rtol=1e-5, atol=1e-6)
    logs = json.loads((tmp_path / "logs0.json").read_text())
    assert all("ce" in h and "kl" in h for h in logs if "loss" in h)


# ---- real data ---------------------------------------------------------------------------------------------


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 8.0 - 1.0, torch.tensor(y)


@pytest.mark.slow
def test_distilling_a_pruned_digits_vit_lowers_kl_and_loss(tmp_path):
    from upvit_hf import PruningTarget, UPPruner

    torch.manual_seed(0)
    x, y = _digits()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, held_out = perm[:1400], perm[1400:]
    cfg = ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    teacher = ViTForImageClassification(cfg)
    opt = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    for _ in range(250):
        idx = train[torch.randint(len(train), (64,))]
        loss = torch.nn.functional.cross_entropy(teacher(pixel_values=x[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()

    pruner = UPPruner(teacher)
    scores = pruner.score([{"pixel_values": x[train[i : i + 100]]} for i in range(0, 200, 100)], show_progress=False)
    student = pruner.prune(PruningTarget.from_ratio(teacher.config, 0.5), scores)
    assert student.config.hidden_size == 16 and student.config.intermediate_size == 32

    args = make_args(
        tmp_path, per_device_train_batch_size=64, per_device_eval_batch_size=400, max_steps=200, learning_rate=2e-3,
        lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=1e-3,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, alpha=1.0, args=args,
        train_dataset=Rows({"pixel_values": x[train], "labels": y[train]}),
        eval_dataset=Rows({"pixel_values": x[held_out], "labels": y[held_out]}),
    )
    def accuracy(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return (model(pixel_values=x[held_out]).logits.argmax(-1) == y[held_out]).float().mean().item()

    before, acc_before = trainer.evaluate(), accuracy(student)
    trainer.train()
    after, acc_after = trainer.evaluate(), accuracy(student)
    print(
        f"digits held-out: teacher acc {accuracy(teacher):.3f}; pruned student KL {before['eval_kl']:.4f} -> "
        f"{after['eval_kl']:.4f}, CE {before['eval_ce']:.4f} -> {after['eval_ce']:.4f}, loss "
        f"{before['eval_loss']:.4f} -> {after['eval_loss']:.4f}, acc {acc_before:.3f} -> {acc_after:.3f}"
    )
    assert after["eval_kl"] < 0.5 * before["eval_kl"]
    assert after["eval_loss"] < 0.5 * before["eval_loss"]
    assert acc_after > acc_before


# ---- the example scripts -----------------------------------------------------------------------------------


def _load_example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_distill_vit_example_on_a_local_image_folder(tmp_path):
    from PIL import Image

    x, y = _digits()
    for split, rows in (("train", range(0, 120)), ("validation", range(1500, 1540))):
        for i in rows:
            folder = tmp_path / "digits" / split / str(int(y[i]))
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(((x[i, 0] + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()).save(folder / f"{i}.png")
    tiny_vit(1, num_labels=10).save_pretrained(tmp_path / "teacher")
    tiny_vit(0, intermediate=16, num_labels=10).save_pretrained(tmp_path / "student")
    out = tmp_path / "out"
    metrics = _load_example("distill_vit").main([
        "--student", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
        "--dataset", str(tmp_path / "digits"), "--output_dir", str(out), "--max-train-samples", "64",
        "--max_steps", "3", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "20",
        "--ema_decay", "0.9", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true",
        "--save_strategy", "no", "--eval_strategy", "no", "--dataloader_num_workers", "0",
    ])
    assert {"eval_loss", "eval_ce", "eval_kl", "eval_accuracy"} <= set(metrics)
    saved = ViTForImageClassification.from_pretrained(out)
    assert saved.config.intermediate_size == 16


def test_distill_gpt2_example_on_local_text_files(tmp_path):
    import treebank
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = treebank.penn["train"].splitlines()
    data = tmp_path / "ptb"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(lines[:300]))
    (data / "validation.txt").write_text("\n".join(treebank.penn["valid"].splitlines()[:60]))
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(lines[:300], trainers.WordLevelTrainer(vocab_size=40, special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "teacher")
    tiny_gpt2(1).save_pretrained(tmp_path / "teacher")
    tiny_gpt2(0, inner=16).save_pretrained(tmp_path / "student")
    out = tmp_path / "out"
    metrics = _load_example("distill_gpt2").main([
        "--student", str(tmp_path / "student"), "--teacher", str(tmp_path / "teacher"),
        "--dataset", str(data), "--output_dir", str(out), "--block_size", "16", "--max-train-samples", "40",
        "--max_eval_samples", "20", "--max_steps", "3", "--per_device_train_batch_size", "8", "--use_cpu",
        "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no", "--eval_strategy", "no",
    ])
    # Reference: the saved student's next-token CE over the first 20 blocks of 16 tokens of the validation
    # lines (each line tokenized on its own and concatenated, as the recipe groups them), in float64.
    student = GPT2LMHeadModel.from_pretrained(out).eval()
    assert student.config.n_inner == 16
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "teacher")
    ids = [i for line in (data / "validation.txt").read_text().split("\n") for i in tokenizer(line)["input_ids"]]
    blocks = torch.tensor(ids[: len(ids) // 16 * 16]).view(-1, 16)[:20]
    with torch.no_grad():
        logits = student(input_ids=blocks).logits[:, :-1].double()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1)).item()
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(ce), rel=1e-5)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--ddp-worker":
        _ddp_worker(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: torchrun --nproc_per_node 2 {sys.argv[0]} --ddp-worker DIR")
