"""Depth surgery: remove one whole block or one hybrid unit from a model's state dict.

A model with L blocks has 2·L residual branches (attention_0, FFN_0, attention_1, FFN_1, …). A removable
unit is two consecutive branches: a *block* (attention_i, FFN_i) or a *hybrid* unit (FFN_i, attention_i+1).
Removing a hybrid leaves attention_i followed by FFN_i+1, which is again a standard block, so either way
the result is the same stock architecture with one block fewer. Nothing here knows a model family: the
adapter says where blocks live (`block_prefix`), which keys form each half (`half_block_prefixes`) and
which constant depends on a block's index (`layer_index_scale`, folded into the query rows).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from transformers import PretrainedConfig

from .adapters import AnyWidths, ModelAdapter, from_stages, layer_stages, layer_widths
from .surgery import StateDict, scale_channels

KINDS = ("block", "hybrid")


@dataclass(frozen=True, order=True)
class BlockUnit:
    """A removable unit: `block` i is branches (2i, 2i+1); `hybrid` i is branches (2i+1, 2i+2), i.e. the
    FFN half of block i and the attention half of block i+1."""

    first_branch: int

    @classmethod
    def block(cls, layer: int) -> BlockUnit:
        return cls(2 * layer)

    @classmethod
    def hybrid(cls, layer: int) -> BlockUnit:
        return cls(2 * layer + 1)

    @property
    def kind(self) -> Literal["block", "hybrid"]:
        return "hybrid" if self.first_branch % 2 else "block"

    @property
    def layer(self) -> int:
        """The block this unit starts in (a hybrid also takes the attention half of `layer + 1`)."""
        return self.first_branch // 2

    @property
    def branches(self) -> tuple[int, int]:
        return (self.first_branch, self.first_branch + 1)

    @property
    def layers(self) -> tuple[int, ...]:
        return (self.layer,) if self.kind == "block" else (self.layer, self.layer + 1)

    def check(self, num_layers: int) -> None:
        """ValueError unless this unit exists in a model of `num_layers` blocks."""
        if not 0 <= self.first_branch < 2 * num_layers - 1:
            raise ValueError(
                f"{self} does not exist in a model of {num_layers} blocks: blocks 0…{num_layers - 1}"
                + (f" and hybrids 0…{num_layers - 2}" if num_layers > 1 else " and no hybrids")
            )

    def as_dict(self) -> dict[str, object]:
        return {"unit": self.kind, "layers": list(self.layers)}

    def __str__(self) -> str:
        return f"{self.kind} {'-'.join(map(str, self.layers))}"


def source_blocks(unit: BlockUnit, num_layers: int) -> list[tuple[int, int]]:
    """For each block of the reduced model, the old blocks its (attention half, FFN half) come from."""
    unit.check(num_layers)
    sources = []
    for new in range(num_layers - 1):
        # the attention half of old block a survives unless it was removed; likewise the FFN half
        attention_from = new if 2 * new < unit.first_branch else new + 1
        ffn_from = new if 2 * new + 1 < unit.first_branch else new + 1
        sources.append((attention_from, ffn_from))
    return sources


def unit_stage(widths: AnyWidths, unit: BlockUnit) -> int:
    """The stage `unit` lies in; ValueError for a hybrid that would span a stage boundary (between two
    stages lies the next stage's patch embedding, so their branches are not adjacent)."""
    unit.check(widths.num_hidden_layers)
    stages = layer_stages(widths)
    first, last = stages[unit.layers[0]], stages[unit.layers[-1]]
    if first != last:
        raise ValueError(f"{unit} spans stages {first} and {last}; only units within one stage can be removed")
    return first


def depth_floors(widths: AnyWidths, num_hidden_layers: int | tuple[int, ...] | list[int]) -> list[int]:
    """The fewest blocks each stage may keep while pruning to `num_hidden_layers` (an int: the total, each
    stage keeping at least one block; a tuple: the depth of every stage); ValueError when impossible."""
    depths = [stage.num_hidden_layers for stage in widths.stages]
    if isinstance(num_hidden_layers, (tuple, list)):
        if len(num_hidden_layers) != len(depths) or any(
            isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= old for d, old in zip(num_hidden_layers, depths)
        ):
            raise ValueError(f"num_hidden_layers must give one depth per stage, each from 1 to the stage's depth "
                             f"{tuple(depths)}, got {tuple(num_hidden_layers)!r}")
        return list(num_hidden_layers)
    if isinstance(num_hidden_layers, bool) or not isinstance(num_hidden_layers, int) \
            or not len(depths) <= num_hidden_layers <= sum(depths):
        raise ValueError(f"num_hidden_layers must be an integer from {len(depths)} to the model's {sum(depths)}, "
                         f"got {num_hidden_layers!r}")
    return [1] * len(depths)


def least_important_unit(scores, widths: AnyWidths, floors: list[int]) -> BlockUnit:
    """The least important unit (earliest on ties) among those in stages still deeper than their floor; a
    hybrid across two stages is never one (its branches are not adjacent in a hierarchical model)."""
    stages = layer_stages(widths)
    by_branch = scores.by_branch().clone()
    for k in range(len(by_branch)):
        stage = stages[k // 2]
        if stages[(k + 1) // 2] != stage or widths.stages[stage].num_hidden_layers <= floors[stage]:
            by_branch[k] = float("inf")
    if not torch.isfinite(by_branch).any():
        raise ValueError("no unit can be removed: every stage is at its target depth")
    return BlockUnit(int(torch.argmin(by_branch)))


def remove_unit(adapter: ModelAdapter, unit: BlockUnit) -> tuple[PretrainedConfig, StateDict]:
    """The config and state dict of `adapter.model` without `unit` (the model itself is untouched).

    Works on the adapter's `surgery_state()` layout and hands the result through `finish_surgery`, like
    width surgery, so per-layer copies a family keeps there move with their block.

    Block keys are re-prefixed for their new index; for each new block, the attention-half keys come from
    one old block and the FFN-half keys from another (the same one unless the block is a hybrid's
    remainder). When an attention half changes index, `adapter.layer_index_scale(old, new)` is folded into
    its query rows, so the reduced model computes exactly the original with the unit's branches skipped.
    """
    widths = adapter.widths
    num_layers = widths.num_hidden_layers
    stage = unit_stage(widths, unit)
    if widths.stages[stage].num_hidden_layers < 2:
        where = f"stage {stage} of " if len(widths.stages) > 1 else ""
        raise ValueError(f"cannot remove a unit from {where}a model with 1 block; at least one must remain")
    sources = source_blocks(unit, num_layers)
    state: StateDict = adapter.surgery_state()

    for new, (attention_from, _) in enumerate(sources):
        factor = adapter.layer_index_scale(attention_from, new) if attention_from != new else 1.0
        if factor != 1.0:
            scale_channels(state, adapter.query_slices(attention_from), layer_widths(widths, attention_from).attention_width,
                           factor)

    old_prefixes = [adapter.block_prefix(layer) for layer in range(num_layers)]
    # the stage that loses a block loses its last slot: later blocks keep their stage, one index lower
    last_of_stage = sum(w.num_hidden_layers for w in widths.stages[: stage + 1]) - 1
    prefixes = old_prefixes[:last_of_stage] + old_prefixes[last_of_stage + 1:]
    attention_keys, ffn_keys = adapter.half_block_prefixes
    halves: list[tuple[dict[str, object], dict[str, object]]] = [({}, {}) for _ in range(num_layers)]
    reduced: StateDict = {}
    for key, tensor in state.items():
        layer = next((i for i, prefix in enumerate(old_prefixes) if key.startswith(prefix)), None)
        if layer is None:
            reduced[key] = tensor
            continue
        rest = key[len(old_prefixes[layer]):]
        if rest.startswith(attention_keys):
            halves[layer][0][rest] = tensor
        elif rest.startswith(ffn_keys):
            halves[layer][1][rest] = tensor
        else:
            raise ValueError(
                f"{key!r} belongs to block {layer} but to neither half in {type(adapter).__name__}."
                f"half_block_prefixes {adapter.half_block_prefixes}; depth pruning cannot place it"
            )
    for new, (attention_from, ffn_from) in enumerate(sources):
        for rest, tensor in (*halves[attention_from][0].items(), *halves[ffn_from][1].items()):
            reduced[prefixes[new] + rest] = tensor

    stages = list(widths.stages)
    stages[stage] = replace(stages[stage], num_hidden_layers=stages[stage].num_hidden_layers - 1)
    config = adapter.pruned_config(from_stages(stages))
    adapter.finish_surgery(reduced, config)
    return config, reduced
