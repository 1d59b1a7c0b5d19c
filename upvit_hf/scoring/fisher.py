"""Fisher estimate of the KL importance: every channel of every component from one forward pass.

Put a continuous mask m (all ones) on every channel, at the same taps and with the same removal semantics
as the exact scorer: residual writers and the embedding output are multiplied by m, every residual
LayerNorm weights its mean and variance by m (a stock LayerNorm at m = 1, physical removal at m_c = 0),
attention q/k/v outputs and the FFN input are multiplied by m. At m = 1, KL(q ‖ p_m) has no first-order term
in m, and its second-order term for channel c is the Fisher information of the mask:

    score(c) = ½ · Σ_x E_{y~q(·|x)} [(∂ log p(y|x) / ∂m_c)²]

which `KL(q ‖ p_c)` approaches when removing c is a small change. The masks have one row per sample, so one
backward pass gives every sample's gradient.

`labels_per_input=K` (default `DEFAULT_LABELS_PER_INPUT`) backward passes per batch estimate the expectation
over y. Where each sample has one output (a classifier), pass k differentiates each sample's own k-th most
likely class (rows are separate samples, so every sample can have its own label in one pass), weighted by
its q, and the last pass one label drawn from q restricted to the remaining classes, weighted by their total
mass: unbiased, and exact once K covers all classes. A trained classifier's q is concentrated, so a few
passes come close to the exact expectation even over 1000 classes (on the digits ViT of
benchmarks/bench_approx.py, 4 passes rank as well as the exact expectation over 10 classes, 2.3x faster).
Labels are drawn from the model's own q (seeded; never the data's labels). For a language model K labels
are drawn per position:
y_t ~ q_t independently at every (weighted) position t, and the per-sample gradient is that of
Σ_t w_t log p_t(y_t). Its square is an unbiased estimate of Σ_t w_t² E[g_t²], the per-token Fisher sum
(w_t² = w_t for 0/1 token weights): cross terms vanish in expectation because the y_t are independent and
E_{y~q}[∂ log p(y)/∂m] = 0 at m = 1 (where p = q). One backward per draw then covers every position; the
price is the cross terms' variance, which falls only with more sequences or draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from ..adapters import ModelAdapter
from ..scores import ImportanceScores
from .proxy_pass import ProxyPass
from .masks import broadcast, channels_masked

DEFAULT_LABELS_PER_INPUT = 4
"""Labels per input (per position for language models), i.e. backward passes per batch."""


class FisherScorer:
    """Fisher scores of all channels of all components in one pass over the proxy set.

    `labels_per_input=K` labels per input cost K backward passes per batch: the K−1 most likely classes + one drawn from the rest for one output per sample (the exact
    expectation when K ≥ the number of classes), K draws per position for language models.
    """

    def __init__(self, adapter: ModelAdapter, labels_per_input: int = DEFAULT_LABELS_PER_INPUT, seed: int = 0,
                 show_progress: bool = True):
        if isinstance(labels_per_input, bool) or not isinstance(labels_per_input, int) or labels_per_input < 1:
            raise ValueError(f"labels_per_input must be a positive integer, got {labels_per_input!r}")
        adapter.require_one_stage("Fisher scoring")
        self.proxy_pass = ProxyPass(adapter, 1, show_progress)
        self.adapter, self.labels_per_input, self.seed = adapter, labels_per_input, seed
        self.expectations: set[str] = set()

    def score(self, proxy: Iterable[Mapping[str, Any]]) -> ImportanceScores:
        widths = self.adapter.widths
        layers = range(widths.num_hidden_layers)
        totals = [torch.zeros(widths.hidden_size, dtype=torch.float64),
                  *[torch.zeros(widths.attention_width, dtype=torch.float64) for _ in layers],
                  *[torch.zeros(widths.intermediate_size, dtype=torch.float64) for _ in layers]]
        generator = torch.Generator(device=self.adapter.model.device).manual_seed(self.seed)
        self.expectations = set()
        samples = self.proxy_pass.run(proxy, 1, "batch", "UP-ViTs Fisher scores",
                                      lambda inputs, bar: self._score_batch(inputs, totals, generator, bar), grad=True)
        count = widths.num_hidden_layers
        meta = {"method": "fisher", "proxy_size": samples, "seed": self.seed,
                "labels_per_input": self.labels_per_input,
                "expectation": "exact" if self.expectations == {"exact"} else "sampled"}
        return ImportanceScores(totals[0], totals[1 : 1 + count], totals[1 + count :], meta=meta)

    def _score_batch(self, inputs, totals: list[torch.Tensor], generator: torch.Generator, bar) -> int:
        adapter = self.adapter
        widths = adapter.widths
        embedded, context = adapter.embed(inputs)
        rows = embedded.shape[0]
        ones = lambda width: embedded.new_ones(rows, width, requires_grad=True)  # noqa: E731
        residual = ones(widths.hidden_size)
        attention = [ones(widths.attention_width) for _ in range(widths.num_hidden_layers)]
        ffn = [ones(widths.intermediate_size) for _ in range(widths.num_hidden_layers)]
        masks = [residual, *attention, *ffn]
        with channels_masked(adapter, residual, attention, ffn):
            hidden = embedded * broadcast(residual, embedded)  # the embedding is the stream's first writer
            for branch in adapter.branches():
                hidden = branch(hidden, context)
            logits = adapter.readout(hidden, context)
            # at least float32 (no float64: gradients, unlike the exact KL, suffer no cancellation, and a
            # language model's float64 log-probabilities would double the largest tensor kept for backward)
            logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        weights = adapter.token_weights(inputs)
        terms = list(self._log_likelihoods(logp, weights, generator))
        for index, (loglik, coefficient) in enumerate(terms):
            grads = torch.autograd.grad(loglik, masks, retain_graph=index < len(terms) - 1)
            for total, grad in zip(totals, grads):  # row r of a mask's gradient is sample r's gradient
                total += (0.5 * coefficient.unsqueeze(1) * grad.double().square()).sum(0).cpu()
        bar.update(1)
        return rows

    def _log_likelihoods(self, logp: torch.Tensor, weights: torch.Tensor | None,
                         generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(Σ of log-likelihoods to differentiate, per-sample coefficient of the squared gradient) pairs whose
        weighted squares sum to the Fisher term: one per class (exact) or one per drawn label set."""
        q = logp.detach().exp()
        classes = logp.shape[-1]
        draws = self.labels_per_input
        if logp.dim() == 2:  # one output per sample
            exact = draws >= classes
            self.expectations.add("exact" if exact else "sampled")
            yield from self._top_and_rest(logp, q, classes if exact else draws - 1, generator)
            return
        self.expectations.add("sampled")
        flat = q.reshape(-1, classes)
        coefficient = logp.new_full((logp.shape[0],), 1.0 / draws)
        for _ in range(draws):
            labels = torch.multinomial(flat, 1, generator=generator).view(*logp.shape[:-1], 1)
            picked = logp.gather(-1, labels).squeeze(-1)
            if weights is not None:
                picked = picked * weights.to(picked.dtype)
            yield picked.sum(), coefficient

    @staticmethod
    def _top_and_rest(logp: torch.Tensor, q: torch.Tensor, top: int, generator: torch.Generator):
        """Each sample's `top` most likely classes weighted by q, then (if any remain) one class drawn from
        q over the rest, weighted by the rest's mass."""
        order = torch.argsort(q, dim=1, descending=True)
        rows = torch.arange(logp.shape[0], device=logp.device)
        for k in range(top):
            label = order[:, k]
            yield logp[rows, label].sum(), q[rows, label]
        if top < logp.shape[1]:
            rest = q.scatter(1, order[:, :top], 0.0)
            mass = rest.sum(1)
            label = torch.multinomial(rest + (mass == 0).unsqueeze(1) * q, 1, generator=generator).squeeze(1)
            yield logp[rows, label].sum(), mass
