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

from ..adapters import ModelAdapter, layer_stages
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
        stages = layer_stages(adapter.widths)
        embedded, context = adapter.embed(inputs)
        weights = adapter.token_weights(inputs)
        pieces = adapter.pieces()
        steps, at = pieces.steps, pieces.branch_steps
        cache = [embedded]  # cache[j] is the input of step j; cache[-1] the final hidden state
        for step in steps:
            cache.append(step(cache[-1], context))
        reference = log_probs(adapter.readout(cache[-1], context))

        # A hybrid across two stages (FFN of a stage's last block, attention of the next stage's first) has
        # the next stage's patch embedding between its branches: it is scored on its own, running that
        # transition, and depth pruning never removes it (the stock architecture cannot express it).
        crossing = [k for k in range(units.numel()) if stages[k // 2] != stages[(k + 1) // 2]]
        for k in crossing:
            hidden = cache[at[k]]
            for j in range(at[k] + 1, len(steps)):
                if j != at[k + 1]:
                    hidden = steps[j](hidden, context)
            units[k] += stacked_kl(adapter, hidden, context, reference, weights, 1)[0]
            bar.update(1)
        adjacent = [k for k in range(units.numel()) if k not in crossing]
        for group in torch.tensor(adjacent, dtype=torch.long).split(self.variants_per_pass):
            first = int(group[0])
            # unit k skips branches k and k+1 (adjacent steps): it enters the stack with the cached input of
            # branch k just before the step after branch k+1
            joins = {at[int(k) + 1] + 1: int(k) for k in group[1:]}
            hidden, stacked, stacked_units = cache[at[first]], context, 1
            for j in range(at[first + 1] + 1, len(steps) + 1):
                if j in joins:
                    hidden = torch.cat([hidden, cache[at[joins[j]]]])
                    stacked_units += 1
                    stacked = adapter.repeat_context(context, stacked_units)
                if j < len(steps):
                    hidden = steps[j](hidden, stacked)
            units[group] += stacked_kl(adapter, hidden, context, reference, weights, len(group))
            bar.update(len(group))
        return embedded.shape[0]
