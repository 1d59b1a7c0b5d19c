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

from transformers import PretrainedConfig

from .adapters import ModelAdapter
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
    if num_layers < 2:
        raise ValueError(f"cannot remove a unit from a model with {num_layers} block; at least one must remain")
    sources = source_blocks(unit, num_layers)
    state: StateDict = adapter.surgery_state()

    for new, (attention_from, _) in enumerate(sources):
        factor = adapter.layer_index_scale(attention_from, new) if attention_from != new else 1.0
        if factor != 1.0:
            scale_channels(state, adapter.query_slices(attention_from), widths.attention_width, factor)

    prefixes = [adapter.block_prefix(layer) for layer in range(num_layers)]
    attention_keys, ffn_keys = adapter.half_block_prefixes
    halves: list[tuple[dict[str, object], dict[str, object]]] = [({}, {}) for _ in range(num_layers)]
    reduced: StateDict = {}
    for key, tensor in state.items():
        layer = next((i for i, prefix in enumerate(prefixes) if key.startswith(prefix)), None)
        if layer is None:
            reduced[key] = tensor
            continue
        rest = key[len(prefixes[layer]):]
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

    config = adapter.pruned_config(replace(widths, num_hidden_layers=num_layers - 1))
    adapter.finish_surgery(reduced, config)
    return config, reduced
