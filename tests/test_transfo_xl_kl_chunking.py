"""Memory-bounded distillation loss (distillation.distillation_loss_parts in chunks of loss items).

Reference: the one-shot loss written here from its definition (CE on the kept items, KL(q_T || p_T) summed), in
float64; chunked values and gradients must agree with it, also through a Transformer-XL adaptive softmax.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from upvit_hf.distillation import distillation_loss_parts
from upvit_hf.models.transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel


def _reference(student, teacher, labels, temperature, smoothing):
    if student.dim() == 3:
        keep = labels[:, 1:] != -100
        s, t, y = student[:, :-1][keep], teacher[:, :-1][keep], labels[:, 1:][keep]
    elif labels.is_floating_point():
        s, t, y = student, teacher, labels
    else:
        keep = labels != -100
        s, t, y = student[keep], teacher[keep], labels[keep]
    ce = F.cross_entropy(s, y, reduction="sum", label_smoothing=smoothing)
    p, q = (s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1)
    return ce, (q.exp() * (q - p)).sum()


def _check(student, teacher, labels, temperature=2.0, smoothing=0.1, chunk=3):
    vocab = student.shape[-1]
    leaf = student.detach().requires_grad_()
    parts = distillation_loss_parts(leaf, teacher, labels, temperature, smoothing, max_chunk_elements=chunk * vocab)
    (parts.ce_sum + 0.7 * parts.kl_sum).backward()
    ref_leaf = student.detach().requires_grad_()
    ce, kl = _reference(ref_leaf, teacher, labels, temperature, smoothing)
    (ce + 0.7 * kl).backward()
    torch.testing.assert_close(parts.ce_sum, ce, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.kl_sum, kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)
    assert leaf.grad.abs().sum() > 0


def test_causal_lm_chunks_equal_one_shot_in_float64():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 7, 11, generator=g, dtype=torch.float64), torch.randn(3, 7, 11, generator=g,
                                                                                             dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, 2] = labels[2, 5] = -100
    for chunk in (1, 3, 4, 100):  # one row per chunk, uneven chunks, all at once
        _check(student, teacher, labels, chunk=chunk)
    ignored = torch.full_like(labels, -100)  # nothing to predict: zero loss, zero gradient
    with torch.no_grad():
        parts = distillation_loss_parts(student, teacher, ignored, max_chunk_elements=11)
    assert parts.ce_sum.item() == parts.kl_sum.item() == 0 and int(parts.num_items) == 0


def test_classifier_hard_and_soft_labels_chunked():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(9, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g,
                                                                                         dtype=torch.float64)
    hard = torch.randint(0, 5, (9,), generator=g)
    hard[4] = -100
    _check(student, teacher, hard, chunk=2)
    soft = torch.rand(9, 5, generator=g, dtype=torch.float64).softmax(-1)
    _check(student, teacher, soft, chunk=4, smoothing=0.0)


def test_parameter_gradients_through_an_adaptive_softmax_are_unchanged():
    config = TransfoXLConfig(vocab_size=50, cutoffs=[10, 30], d_model=12, d_embed=16, n_head=2, d_head=4,
                             d_inner=20, div_val=2, n_layer=2, mem_len=0, dropout=0.0, dropatt=0.0)
    torch.manual_seed(0)
    student, teacher = TransfoXLLMHeadModel(config).double(), TransfoXLLMHeadModel(config).double().eval()
    ids = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        teacher_logits = teacher(input_ids=ids).logits

    def grads(max_chunk_elements: int | None) -> list[torch.Tensor]:
        student.zero_grad()
        logits = student(input_ids=ids).logits
        if max_chunk_elements is None:
            ce, kl = _reference(logits, teacher_logits, ids, 1.5, 0.0)
        else:
            parts = distillation_loss_parts(logits, teacher_logits, ids, 1.5, max_chunk_elements=max_chunk_elements)
            ce, kl = parts.ce_sum, parts.kl_sum
        (ce + kl).backward()
        return [p.grad.clone() for p in student.parameters() if p.grad is not None]

    reference = grads(None)
    for got, want in zip(grads(2 * 50), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bad_budget_is_refused():
    with pytest.raises(ValueError, match="max_chunk_elements"):
        distillation_loss_parts(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long),
                                max_chunk_elements=0)
