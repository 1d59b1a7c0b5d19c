"""Exact KL importance of depth units (whole blocks and hybrid units), cheaply.

With L blocks there are 2·L residual branches and 2·L−1 removable units; unit k skips branches k and
k+1 (k even: block k/2; k odd: hybrid (k−1)/2, the FFN of block (k−1)/2 and the attention of the next).
Per proxy batch the input of every branch is computed once (one ordinary forward, 2·L branch
evaluations). The output without unit k is the suffix `branches[k+2:]` applied to the cached input of
branch k, so no prefix is ever recomputed; and the units of a group share one stacked pass: the group's
stack starts with its earliest unit and each later unit joins it (as one more copy of the batch) at the
branch where its suffix begins. Evaluations per batch, in branch applications to one copy of the batch:
2·L + Σ_k (2·L − 2 − k) = 2·L + (2·L−1)(L−1), against (2·L−1)(2·L−2) + 2·L for building and running
each reduced model in turn: about half, and one embedding instead of 2·L.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ..adapters import ModelAdapter
from ..scores import BlockScores
from .exact import log_probs, stacked_kl
from .proxy_pass import ProxyPass


def branch_evaluations(num_layers: int) -> tuple[int, int]:
    """(this scorer, naive) branch applications to one copy of a batch, per proxy batch."""
    branches = 2 * num_layers
    units = branches - 1
    ours = branches + sum(branches - 2 - k for k in range(units))
    naive = branches + units * (branches - 2)
    return ours, naive


class BlockKLScorer:
    """Scores every block and hybrid unit in one pass over the proxy set.

    At most `variants_per_pass` units are stacked along the batch at once; memory grows linearly with it.
    """

    def __init__(self, adapter: ModelAdapter, variants_per_pass: int | str = 8, show_progress: bool = True,
                 **scale: Any):
        self.proxy_pass = ProxyPass(adapter, variants_per_pass, show_progress, **scale)
        self.adapter = adapter

    @property
    def variants_per_pass(self) -> int:
        return self.proxy_pass.variants_per_pass

    def score(self, proxy: Iterable[Mapping[str, Any]]) -> BlockScores:
        num_layers = self.adapter.widths.num_hidden_layers
        units = torch.zeros(2 * num_layers - 1, dtype=torch.float64, device=self.proxy_pass.device)
        samples = self.proxy_pass.run(proxy, units.numel(), "unit", f"UP-ViTs block scores ({num_layers} blocks)",
                                      lambda inputs, bar: self._score_batch(inputs, units, bar),
                                      sums={"units": units}, method="blocks")
        units = units.cpu()
        return BlockScores(units[0::2].clone(), units[1::2].clone(), meta={"method": "kl", "proxy_size": samples})

    def _score_batch(self, inputs, units: torch.Tensor, bar) -> int:
        adapter = self.adapter
        embedded, context = adapter.embed(inputs)
        weights = adapter.token_weights(inputs)
        branches = adapter.branches()
        cache = [embedded]  # cache[j] is the input of branch j; cache[-1] the final hidden state
        for branch in branches:
            cache.append(branch(cache[-1], context))
        reference = log_probs(adapter.readout(cache[-1], context))

        for group in torch.arange(units.numel()).split(self.variants_per_pass):
            first, last = int(group[0]), int(group[-1])
            # unit k skips branches k and k+1: it enters the stack with cache[k] just before branch k+2
            hidden = cache[first]
            stacked = context
            for j in range(first + 2, len(branches) + 1):
                joining = j - 2
                if first < joining <= last:
                    hidden = torch.cat([hidden, cache[joining]])
                    stacked = adapter.repeat_context(context, joining - first + 1)
                if j < len(branches):
                    hidden = branches[j](hidden, stacked)
            units[group] += stacked_kl(adapter, hidden, context, reference, weights, len(group))
            bar.update(len(group))
        return embedded.shape[0]
