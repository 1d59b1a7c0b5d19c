"""Fine-tuning a pruned model with soft distillation from the unpruned one (UP-ViTs, paper Eq. 2).

    L = CE(y, p) + alpha * T^2 * KL(q_T || p_T)

``p`` is the student's and ``q`` the teacher's output distribution, ``q_T``/``p_T`` the same at temperature
``T`` (``T = 1`` is the paper's form; ``T^2`` keeps the gradient scale of the KL term independent of ``T``).
Both terms are averaged over the same items: samples for a classifier (logits ``[B, C]``), predicted tokens
for a causal LM (logits ``[B, T, V]``, labels ``[B, T]``: logits at position ``t`` predict label ``t + 1``,
``-100`` labels are skipped). Classification labels may be class indices ``[B]`` or soft targets ``[B, C]``
(CutMix / Mixup).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.utils import logging

from .model_io import IGNORE_INDEX, logits_of

logger = logging.get_logger(__name__)

__all__ = ["DistillationTrainer", "EMACallback", "LossParts", "count_loss_items", "distillation_loss_parts"]



@dataclass
class LossParts:
    """Summed (not averaged) loss terms of one batch, so callers can normalize them as they need."""

    ce_sum: torch.Tensor
    kl_sum: torch.Tensor
    num_items: torch.Tensor


def _is_soft(labels: torch.Tensor) -> bool:
    return labels.is_floating_point()


LOSS_CHUNK_ELEMENTS = 1 << 24
"""Loss items × classes evaluated at once (64 MiB in float32): a vocabulary of 267,735 words is read ~62 tokens at a
time, so the loss's own temporaries stay near this size however many tokens a batch has."""


def _rows(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logits as rows [M, C] (a view), the rows the loss averages over [N], their targets).

    The kind of model is read from the shapes alone: 2-D logits are a classifier, 3-D logits a causal LM (row
    ``b·T + t`` predicts ``labels[b, t + 1]``). Rows are picked by index, so no [N, C] copy is made here.
    """
    if logits.dim() == 2:
        if _is_soft(labels):
            if labels.shape != logits.shape:
                raise ValueError(
                    f"soft labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
                )
            return logits, torch.arange(logits.shape[0], device=logits.device), labels
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"class labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
        keep = labels != IGNORE_INDEX
        return logits, keep.nonzero().squeeze(1).to(logits.device), labels[keep]
    if logits.dim() == 3:
        if _is_soft(labels) or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"a causal LM (logits {tuple(logits.shape)}) needs integer labels of shape "
                f"{tuple(logits.shape[:2])}, got {labels.dtype} {tuple(labels.shape)}"
            )
        batch, seq = labels.shape
        keep = labels[:, 1:] != IGNORE_INDEX
        positions = torch.arange(batch * seq, device=labels.device).view(batch, seq)[:, :-1]
        return logits.reshape(batch * seq, -1), positions[keep].to(logits.device), labels[:, 1:][keep]
    raise ValueError(f"logits must be [batch, classes] or [batch, seq, vocab], got shape {tuple(logits.shape)}")


def _loss_terms(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float, label_smoothing: float
) -> torch.Tensor:
    """``[CE(y, p) summed, KL(q_T || p_T) summed]`` of some rows, in float32 (float64 stays float64)."""
    dtype = torch.promote_types(student.dtype, torch.float32)
    s, t = student.to(dtype), teacher.to(dtype)
    # Class ids or probabilities [N, C]; smoothing mixes either with the uniform distribution.
    targets = targets.to(dtype) if _is_soft(targets) else targets
    ce_sum = F.cross_entropy(s, targets, reduction="sum", label_smoothing=label_smoothing)
    log_p_t = F.log_softmax(s / temperature, dim=-1)
    log_q_t = F.log_softmax(t / temperature, dim=-1)
    return torch.stack([ce_sum, F.kl_div(log_p_t, log_q_t, reduction="sum", log_target=True)])


class _ChunkedLossTerms(torch.autograd.Function):
    """`_loss_terms` over rows ``index`` of ``student``/``teacher``, a chunk of rows at a time.

    Nothing of the chunks is kept for backward: it recomputes each chunk and writes that chunk's gradient into
    the (unavoidable) full-size gradient of ``student``, so the peak grows with the chunk, not with the batch.
    """

    @staticmethod
    def forward(ctx, student, teacher, index, targets, temperature, label_smoothing, chunk_rows):
        ctx.save_for_backward(student, teacher, index, targets)
        ctx.options = (temperature, label_smoothing, chunk_rows)
        total = student.new_zeros(2, dtype=torch.promote_types(student.dtype, torch.float32))
        for begin in range(0, index.numel(), chunk_rows):
            rows = index[begin : begin + chunk_rows]
            chunk_targets = targets[begin : begin + chunk_rows]
            total += _loss_terms(student[rows], teacher[rows], chunk_targets, temperature, label_smoothing)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        student, teacher, index, targets = ctx.saved_tensors
        temperature, label_smoothing, chunk_rows = ctx.options
        grad = torch.zeros_like(student)
        for begin in range(0, index.numel(), chunk_rows):
            rows = index[begin : begin + chunk_rows]
            with torch.enable_grad():
                piece = student[rows].detach().requires_grad_()
                terms = _loss_terms(piece, teacher[rows], targets[begin : begin + chunk_rows], temperature,
                                    label_smoothing)
                (piece_grad,) = torch.autograd.grad(terms, piece, grad_total)
            grad[rows] = piece_grad.to(grad.dtype)
        return grad, None, None, None, None, None, None


def count_loss_items(labels: torch.Tensor) -> torch.Tensor:
    """A tensor whose entries != -100 are exactly the items the loss averages over (one per sample or token).

    Used to feed Trainer's `num_items_in_batch` count, which counts `labels != -100`: for soft targets that
    would count every class, and for a causal LM it must skip position 0 (never a prediction target).
    """
    if _is_soft(labels):
        return torch.zeros(labels.shape[:-1], dtype=torch.long, device=labels.device)
    if labels.dim() == 2:
        return labels[:, 1:]
    return labels


def distillation_loss_parts(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    max_chunk_elements: int = LOSS_CHUNK_ELEMENTS,
) -> LossParts:
    """Summed CE(y, p) and KL(q_T || p_T) over the loss items, in float32 whatever the logits' dtype.

    Computed `max_chunk_elements` (items × classes) at a time with gradients equal to the one-shot formula, so a
    large vocabulary never needs several copies of [tokens, vocabulary] (see `_ChunkedLossTerms`).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits differ in shape: "
            f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    if max_chunk_elements < 1:
        raise ValueError(f"max_chunk_elements must be positive, got {max_chunk_elements}")
    student, index, targets = _rows(student_logits, labels)
    teacher = teacher_logits.detach().reshape(student.shape)
    chunk_rows = max(1, max_chunk_elements // student.shape[-1])
    terms = _ChunkedLossTerms.apply(student, teacher, index, targets, temperature, label_smoothing, chunk_rows)
    return LossParts(terms[0], terms[1], torch.tensor(index.numel(), device=student.device))


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss is CE + alpha * T^2 * KL to a frozen teacher (UP-ViTs fine-tuning, Eq. 2).

    The trainer computes the whole loss from the student's logits (the student never sees `labels`), so any
    classifier or causal LM works the same way, including students that cannot return a loss themselves
    (`DeiTForImageClassificationWithTeacher`) and soft targets. The teacher is kept on the trainer only: it
    is not a submodule of the student, so it never reaches the optimizer, checkpoints or `save_model`.

    Logs `ce` and `kl` (averaged over the logging window like `loss`, so `loss = ce + alpha * T^2 * kl`) and,
    on evaluation, `eval_ce` / `eval_kl` (per sample or token over the whole evaluation set).
    """

    def __init__(
        self,
        *args: Any,
        teacher_model: nn.Module | None = None,
        alpha: float = 1.0,
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if teacher_model is None:
            raise ValueError("DistillationTrainer needs `teacher_model` (the unpruned model)")
        if not (alpha >= 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError("DistillationTrainer defines the loss itself; `compute_loss_func` is not supported")
        super().__init__(*args, **kwargs)
        if teacher_model is self.model:
            raise ValueError("`teacher_model` must be a separate model, not the student itself")
        if self.args.label_names not in (None, ["labels"]):
            raise ValueError(
                f"DistillationTrainer reads targets from `labels`; got label_names={self.args.label_names}"
            )
        # Students such as DeiTForImageClassificationWithTeacher take no `labels` argument, so Trainer would
        # neither keep the column nor compute an eval loss for them; the targets are ours, not the model's.
        self.label_names = ["labels"]
        # Our loss consumes `num_items_in_batch` whatever the student's forward signature: this makes Trainer
        # count the loss items of the whole accumulated (and, by default, all-process) batch for every student.
        self.model_accepts_loss_kwargs = True

        # The caller's teacher keeps its mode, `requires_grad` flags and config: it runs under no_grad and in
        # eval mode only for the duration of each forward (see `_teacher_logits`). Only its device changes.
        self.teacher_model = teacher_model.to(self.args.device)
        self.alpha = float(alpha)
        self.temperature = float(temperature)

        self._last_parts: tuple[LossParts, torch.Tensor, torch.Tensor] | None = None
        self._train_terms: torch.Tensor | None = None  # [ce, kl] in the scale of the logged `loss`
        self._pending_logs: dict[str, float] = {}
        self._eval_sums: torch.Tensor | None = None  # [ce_sum, kl_sum, num_items]

    # ---- loss -------------------------------------------------------------------------------------------

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | int | None:
        # Trainer counts `shift_labels != -100` when a batch carries `shift_labels`; give it our items (one per
        # sample, soft or hard, or one per predicted token) and keep its cross-process/parallelism handling.
        proxies = [
            {"labels": b["labels"], "shift_labels": count_loss_items(b["labels"])}
            if isinstance(b, Mapping) and torch.is_tensor(b.get("labels"))
            else b
            for b in batch_samples
        ]
        return super()._get_num_items_in_batch(proxies, device)

    def _teacher_logits(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """The teacher's logits without a graph, in eval mode (no dropout); its own mode is restored after."""
        teacher = self.teacher_model
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                return logits_of(teacher(**inputs))
        finally:
            teacher.train(was_training)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """CE + alpha * T^2 * KL, averaged per loss item, or summed / `num_items_in_batch` when given.

        With `num_items_in_batch` (the item count of the whole accumulated batch, over all processes by
        default) the loss is already scaled for gradient accumulation, exactly as Trainer's own token-averaged
        losses are; without it, it is this batch's mean and Trainer divides it by the accumulation steps.
        """
        if "labels" not in inputs:
            raise ValueError(
                "DistillationTrainer needs `labels` in every batch (class ids, soft targets or token ids)"
            )
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        student_logits = logits_of(outputs)

        teacher_logits = self._teacher_logits(inputs)

        parts = distillation_loss_parts(
            student_logits, teacher_logits, labels, self.temperature, self.args.label_smoothing_factor
        )
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                # DataParallel (n_gpu > 1) hands one count per replica; the loss here is over the gathered batch.
                num_items_in_batch = num_items_in_batch.sum().to(parts.ce_sum.device)
            denominator = num_items_in_batch
            scale = 1
            if self.args.average_tokens_across_devices and self.args.n_gpu <= 1:
                # The count covers all processes while DDP averages gradients over them: undo that average,
                # as Trainer.compute_loss does.
                scale = self.accelerator.num_processes // self.get_tp_size()
        else:
            denominator = parts.num_items.clamp(min=1)
            scale = 1
        kl_weight = self.alpha * self.temperature**2
        ce_term = parts.ce_sum * scale / denominator
        kl_term = parts.kl_sum * scale / denominator
        loss = ce_term + kl_weight * kl_term

        # Read by training_step (GA scaling of this loss) and remembered for the ce / kl logs.
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        self._last_parts = (parts, ce_term.detach(), kl_term.detach())

        if not return_outputs:
            return loss
        if isinstance(outputs, Mapping):
            outputs["loss"] = loss
        return loss, outputs

    # ---- training logs -----------------------------------------------------------------------------------

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        last, self._last_parts = self._last_parts, None
        if last is None:
            return loss
        if self.args.logging_nan_inf_filter and not torch.isfinite(loss):
            return loss  # Trainer leaves such steps out of the logged loss too
        terms = torch.stack([last[1], last[2]]).float()
        if not self.loss_is_scaled_for_ga:  # Trainer divided the loss the same way
            terms = terms / self.current_gradient_accumulation_steps
        if self._train_terms is None or self._train_terms.device != terms.device:
            self._train_terms = torch.zeros_like(terms)
        self._train_terms += terms
        return loss

    def _maybe_log_save_evaluate(self, tr_loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        # Same condition, window and cross-process mean as Trainer uses for `loss`; the reduce is collective,
        # so it runs here (on every rank) rather than in `log`, which only attaches the result.
        if self.control.should_log and self.state.global_step > self._globalstep_last_logged:
            steps = self.state.global_step - self._globalstep_last_logged
            terms = self._train_terms if self._train_terms is not None else torch.zeros(2, device=tr_loss.device)
            terms = self.accelerator.reduce(terms.clone(), reduction="mean") / steps
            self._pending_logs = {"ce": terms[0].item(), "kl": terms[1].item()}
            if self._train_terms is not None:
                self._train_terms.zero_()
        super()._maybe_log_save_evaluate(tr_loss, *args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._pending_logs:
            logs = {**logs, **self._pending_logs}
            self._pending_logs = {}
        super().log(logs, start_time)

    # ---- evaluation ----------------------------------------------------------------------------------------

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        result = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        last, self._last_parts = self._last_parts, None
        if last is not None and self._eval_sums is not None:
            parts = last[0]
            sums = torch.stack([parts.ce_sum, parts.kl_sum, parts.num_items.float()])
            self._eval_sums += sums.detach().to(self._eval_sums)
        return result

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> Any:
        """Trainer's loop, plus `{prefix}_ce` and `{prefix}_kl`: exact per-item means over all processes."""
        self._eval_sums = torch.zeros(3, dtype=torch.float64, device=self.args.device)
        try:
            output = super().evaluation_loop(
                dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
            )
            sums = self.accelerator.reduce(self._eval_sums, reduction="sum")
        finally:
            self._eval_sums = None
        if sums[2] > 0:
            output.metrics[f"{metric_key_prefix}_ce"] = (sums[0] / sums[2]).item()
            output.metrics[f"{metric_key_prefix}_kl"] = (sums[1] / sums[2]).item()
        return output


class EMACallback(TrainerCallback):
    """Exponential moving average of the trained weights, written into the model when training ends.

    The authors' recipe keeps an EMA of the student (as DeiT does); copying it into the model at the end means
    `save_model` saves the averaged weights. The average lives in plain tensors here, never in the model, so it
    does not reach the optimizer or checkpoints (it is not restored on resume).
    """

    def __init__(self, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any) -> None:
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def on_step_end(self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module, **kwargs: Any) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name])
        logger.info("EMA weights (decay %s) copied into the model", self.decay)
