"""The adapter contract: everything UP-ViTs needs to know about one model family.

Scorers, surgery and the pruner talk to a model only through a `ModelAdapter`, so adding a family means
adding one adapter file. An adapter answers three questions:

* where the channels live: for each component, the state-dict tensors (and axes) a channel index selects;
* how to run the model in pieces: embed → residual branches (two per layer) → readout, so a scorer can
  cache the input of any branch and run only the suffix; hierarchical models (PVTv2) add a transition at the
  start of every stage (its patch embedding), and each stage has its own residual component and width;
* where to tap the activations to mask a channel (writers into the residual stream, LayerNorms, the
  attention q/k/v outputs, the FFN activations) and which config keys hold the widths.

It is also the one place the rest of the package asks about a family (the CLI, model cards, evaluation,
recipes): which model classes it supports, whether it reads images or text, whether it carries memories, which
config keys hold its input shape and context length. The registry in `upvit_hf.adapters` finds the adapter
of a config by its `model_type`.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

Context = dict[str, Any]
"""Per-batch tensors the pieces share (attention masks, position ids); batch-first."""

Branch = Callable[[torch.Tensor, Context], torch.Tensor]
"""One residual branch: `hidden -> hidden + f(hidden)` (attention half or FFN half of a block)."""


@dataclass(frozen=True)
class Widths:
    """The widths UP-ViTs changes, in family-independent names: those of a plain (one-stage) model, or of one
    stage of a hierarchical one (see `StagedWidths`)."""

    hidden_size: int
    num_attention_heads: int
    head_dim: int
    intermediate_size: int
    num_hidden_layers: int

    @property
    def attention_width(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def stages(self) -> tuple[Widths, ...]:
        """A plain model is the one-stage case."""
        return (self,)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class StagedWidths:
    """The widths of a hierarchical model (PVTv2): one `Widths` per stage, each stage with its own residual
    width. Layers (blocks) are numbered globally, stage by stage."""

    stages: tuple[Widths, ...]

    @property
    def num_hidden_layers(self) -> int:
        return sum(stage.num_hidden_layers for stage in self.stages)

    def as_dict(self) -> dict[str, list[int]]:
        """Per-stage lists under the one-stage names (what the pruning record and model card show)."""
        return {key: [stage.as_dict()[key] for stage in self.stages] for key in self.stages[0].as_dict()}


AnyWidths = Widths | StagedWidths
"""What `ModelAdapter.read_widths` returns; code that serves both iterates `.stages`."""


def from_stages(stages: list[Widths] | tuple[Widths, ...]) -> AnyWidths:
    """`Widths` for one stage (plain models keep their type), `StagedWidths` otherwise."""
    return stages[0] if len(stages) == 1 else StagedWidths(tuple(stages))


def layer_stages(widths: AnyWidths) -> list[int]:
    """The stage of every layer, in global layer order."""
    return [s for s, stage in enumerate(widths.stages) for _ in range(stage.num_hidden_layers)]


def layer_widths(widths: AnyWidths, layer: int) -> Widths:
    """The widths of the stage that holds `layer`."""
    return widths.stages[layer_stages(widths)[layer]]


@dataclass(frozen=True)
class ParamSlice:
    """Channel `i` selects entries `offset + i` (for every offset) along `axis` of state-dict tensor `name`
    (a key of `ModelAdapter.surgery_state()`, which is `model.state_dict()` unless the family says otherwise).

    Several offsets describe fused layouts, e.g. GPT-2's `c_attn` holds q, k, v at 0, E and 2E.
    """

    name: str
    axis: int
    offsets: tuple[int, ...] = (0,)

    def indices(self, channels: torch.Tensor) -> torch.Tensor:
        return torch.cat([channels + offset for offset in self.offsets])


@dataclass(frozen=True)
class RefitMap:
    """A linear map whose weight and bias reconstruction refits: one through which a residual branch writes into
    the residual stream (the attention output projection, the second FFN projection), or a classifier head.
    Reconstruction captures its input and fits it to the original's output of the same map.

    `input_axis` is the axis of `module.weight` that indexes the map's inputs: 1 for `nn.Linear` ([out, in]),
    0 for a transposed layout such as GPT-2's `Conv1D` ([in, out]).
    """

    module: nn.Module
    input_axis: int = 1

    @property
    def reads(self) -> nn.Module:
        """The module whose input is the fit's input."""
        return self.module

    @property
    def writes(self) -> nn.Module:
        """The module whose output (in the original model) is the fit's target."""
        return self.module

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.module, "bias", None)

    def matrix(self) -> torch.Tensor:
        """The weight as [out, in]."""
        weight = self.module.weight
        return weight if self.input_axis == 1 else weight.t()

    @torch.no_grad()
    def assign(self, matrix: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Set the weight from an [out, in] matrix (and the bias, where the map has one), in place."""
        weight = self.module.weight
        weight.copy_((matrix if self.input_axis == 1 else matrix.t()).to(weight))
        if bias is not None:
            self.bias.copy_(bias.to(self.bias))


@dataclass(frozen=True)
class NormRefit:
    """A final LayerNorm whose per-channel scale and shift reconstruction refits through the frozen linear head
    that reads it: for a head that must not change, such as an LM head tied to the input embedding.

    The fit matches the head's logits up to a constant per position (the softmax does not see it).
    """

    norm: nn.LayerNorm
    head: nn.Linear

    @property
    def reads(self) -> nn.Module:
        return self.norm

    @property
    def writes(self) -> nn.Module:
        return self.head


def _mapped_classes(auto: type, config_class: type[PretrainedConfig]) -> tuple[type, ...]:
    """The model classes an Auto class maps `config_class` to (transformers' auto mappings; several where the
    Auto class picks among them by `config.architectures`)."""
    mapping = getattr(auto, "_model_mapping", None)
    try:
        mapped = () if mapping is None else mapping[config_class]
    except KeyError:
        return ()
    return mapped if isinstance(mapped, tuple) else (mapped,)


@dataclass(frozen=True)
class Pieces:
    """The network between `embed` and `readout` as a list of steps (hidden, context) -> hidden.

    `branch_steps[i]` is the step of residual branch i; `stage_entries[s]` the first step of stage s (its
    transition where it has one, else its first branch): residual masks of stage s apply from there on, and
    the stream is zeroed at removed channels just before the stage's first branch.
    """

    steps: list[Branch]
    branch_steps: list[int]
    stage_entries: list[int]

    def first_branch_step(self, widths: AnyWidths, stage: int) -> int:
        return self.branch_steps[2 * sum(w.num_hidden_layers for w in widths.stages[:stage])]


class ModelAdapter(ABC):
    """Family knowledge for one kind of model; see the module docstring."""

    model_types: ClassVar[tuple[str, ...]] = ()
    """`config.model_type` values this adapter reads widths for (the registry's keys)."""
    model_classes: ClassVar[tuple[type[PreTrainedModel], ...]] = ()
    """Model classes this adapter can score and prune; a checkpoint naming another class is refused."""
    modality: ClassVar[str]
    """"image" (inputs are `pixel_values`) or "text" (inputs are `input_ids`)."""
    uses_memory: ClassVar[bool] = False
    """True where the forward carries memories across segments (`mems`, Transformer-XL)."""
    needs_remote_code: ClassVar[bool] = False
    """True where transformers itself has no such model: it loads only after `import upvit_hf` (which registers
    our implementation with the Auto classes) or with `trust_remote_code=True`."""
    half_block_prefixes: ClassVar[tuple[tuple[str, ...], tuple[str, ...]]] = ((), ())
    """State-dict key prefixes, relative to a block, of its attention half and of its FFN half."""
    head_dim_follows_hidden: ClassVar[bool] = False
    """True where the stock architecture derives head_dim as hidden_size // heads (no separate key)."""
    intermediate_follows_hidden: ClassVar[bool] = False
    """True where the stock architecture builds the FFN as hidden_size × an integer ratio (PVTv2)."""
    required_inputs: ClassVar[tuple[str, ...]] = ()
    optional_inputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: PreTrainedModel):
        self.model = model
        self._param_names: dict[int, list[str]] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            self._param_names.setdefault(id(param), []).append(name)

    # ------------------------------------------------------------------ config
    def memory_settings(self, *, mem_len: int, clamp_len: int, same_length: bool) -> AbstractContextManager:
        """Temporarily evaluate with these memory settings (only for families with `uses_memory`)."""
        raise ValueError(f"{type(self.model).__name__} carries no memories")

    @classmethod
    def legacy_tokenizer(cls, name_or_path: str) -> Any | None:
        """A tokenizer converted from files an older transformers saved, for a model `AutoTokenizer` cannot
        load a tokenizer for; None where the family has no such files."""
        return None

    @classmethod
    @abstractmethod
    def read_widths(cls, config: PretrainedConfig) -> AnyWidths:
        """The current widths, read from the family's config keys (`StagedWidths` for hierarchical models)."""

    @classmethod
    @abstractmethod
    def write_widths(cls, config: PretrainedConfig, widths: AnyWidths) -> None:
        """Set the family's config keys (in place) so a stock model of `widths` is built from it."""

    @classmethod
    def max_positions(cls, config: PretrainedConfig) -> int | None:
        """The longest input sequence the config allows; None where it sets no limit (or has no sequence input)."""
        return None

    @classmethod
    def image_size(cls, config: PretrainedConfig) -> tuple[int, int]:
        """(height, width) of the images an image model takes."""
        size = config.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @classmethod
    def num_channels(cls, config: PretrainedConfig) -> int:
        """Channels of the images an image model takes (1 for greyscale models, 3 for RGB)."""
        return config.num_channels

    @classmethod
    def vocab_size(cls, config: PretrainedConfig) -> int:
        """Number of token ids a text model takes."""
        return config.vocab_size

    @classmethod
    def dummy_inputs(
        cls,
        config: PretrainedConfig,
        batch_size: int = 1,
        *,
        seq_len: int = 128,
        image_size: int | tuple[int, int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> dict[str, torch.Tensor]:
        """Random inputs of the config's shape: `pixel_values` for image models, `input_ids` (`seq_len` capped at
        `max_positions`) for text models; for FLOP counts and throughput."""
        if cls.modality == "image":
            size = image_size if image_size is not None else cls.image_size(config)
            height, width = (size, size) if isinstance(size, int) else size
            shape = (batch_size, cls.num_channels(config), height, width)
            return {"pixel_values": torch.randn(shape, device=device, dtype=dtype)}
        seq_len = min(seq_len, cls.max_positions(config) or seq_len)
        return {"input_ids": torch.randint(0, cls.vocab_size(config), (batch_size, seq_len), device=device)}

    @classmethod
    def model_class_for_config(cls, config: PretrainedConfig) -> type[PreTrainedModel] | None:
        """The class a checkpoint of `config` was saved as (`config.architectures[0]`) if this family supports
        it, else None (loading another class would drop or re-initialize heads). A config without
        `architectures` describes the backbone: the class `AutoModel` maps it to."""
        backbones = _mapped_classes(AutoModel, type(config))
        names = getattr(config, "architectures", None) or [c.__name__ for c in backbones]
        return next((c for c in cls.model_classes if names and c.__name__ == names[0]), None)

    @classmethod
    def auto_class(cls, model_class: type[PreTrainedModel]) -> type | None:
        """The transformers Auto class that loads `model_class` from its config (transformers' own auto
        mappings, including classes registered with them, such as our Transformer-XL); None if none does."""
        from transformers.models.auto import modeling_auto

        autos = [getattr(modeling_auto, n) for n in dir(modeling_auto) if n.startswith("AutoModel")]
        # the specific heads first, AutoModel (backbones) last
        for auto in sorted(autos, key=lambda a: a is AutoModel):
            if model_class in _mapped_classes(auto, model_class.config_class):
                return auto
        return None

    @property
    def widths(self) -> AnyWidths:
        return self.read_widths(self.model.config)

    @property
    def num_stages(self) -> int:
        return len(self.widths.stages)

    def require_one_stage(self, what: str) -> None:
        """ValueError for a hierarchical model where `what` handles one residual width only."""
        if self.num_stages > 1:
            raise ValueError(f"{what} does not support hierarchical models ({type(self.model).__name__} has "
                             f"{self.num_stages} stages) yet; use method='kl' (exact scores)")

    def check_widths(self, widths: AnyWidths) -> None:
        """Raise ValueError for widths this family's stock architecture cannot express."""

    def query_scale(self, old_head_dim: int, new_head_dim: int) -> float:
        """Factor folded into the query rows so `q·k / sqrt(head_dim)` keeps its value when head_dim changes."""
        return math.sqrt(new_head_dim / old_head_dim)

    def pruned_config(self, widths: AnyWidths) -> PretrainedConfig:
        config = copy.deepcopy(self.model.config)
        self.write_widths(config, widths)
        return config

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        """A fresh stock model of the same class for `config` (weights are loaded by the caller)."""
        return type(self.model)(config)

    # ------------------------------------------------------------------ where channels live
    def names(self, param: torch.Tensor) -> list[str]:
        """Every state-dict key of `param` (tied parameters have several)."""
        return self._param_names[id(param)]

    def slices(self, params: list[torch.Tensor | None], axis: int, offsets: tuple[int, ...] = (0,)) -> list[ParamSlice]:
        """ParamSlices for every state-dict key of each given parameter (None entries are skipped)."""
        return [ParamSlice(name, axis, offsets) for p in params if p is not None for name in self.names(p)]

    def surgery_state(self) -> dict[str, torch.Tensor]:
        """The state dict that surgery cuts, in the layout the `ParamSlice`s name (a new dict; tensors shared).

        By default `model.state_dict()`. A family overrides it where a channel cannot be named in the stock
        layout: a tensor whose flattened index is the channel (stored flat here), or one tensor shared by all
        layers whose layers keep different channels (copied here under per-layer keys). `finish_surgery` turns
        the cut dict back into the stock layout.
        """
        return dict(self.model.state_dict())

    def finish_surgery(self, state: dict[str, torch.Tensor], config: PretrainedConfig) -> None:
        """Bring a cut `surgery_state` (in place) into the layout a stock model of `config` loads, adjusting
        `config` (in place) where that layout needs a different setting. By default nothing to do."""

    @abstractmethod
    def residual_slices(self, stage: int = 0) -> list[ParamSlice]:
        """Component 1 (of `stage`; plain models have stage 0 only): every tensor a residual channel touches."""

    @abstractmethod
    def attention_slices(self, layer: int) -> list[ParamSlice]:
        """Component 2 of `layer`: rows of q/k/v (and biases), columns of the output projection."""

    @abstractmethod
    def query_slices(self, layer: int) -> list[ParamSlice]:
        """The query-side tensors of `layer` that the attention scale multiplies (for folding)."""

    @abstractmethod
    def ffn_slices(self, layer: int) -> list[ParamSlice]:
        """Component 3 of `layer`: rows of the first FFN projection (and bias), columns of the second."""

    # ------------------------------------------------------------------ depth
    @abstractmethod
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""

    def block_prefix(self, layer: int) -> str:
        """The state-dict key prefix of block `layer`, e.g. `vit.layers.3.`."""
        block = self.blocks()[layer]
        return next(f"{name}." for name, module in self.model.named_modules() if module is block)

    def layer_index_scale(self, old_index: int, new_index: int) -> float:
        """Factor folded into the query rows when a block moves from `old_index` to `new_index`
        (for families whose attention scale depends on the layer index)."""
        return 1.0

    # ------------------------------------------------------------------ running in pieces
    def check_scorable(self) -> None:
        """ValueError when the model has no output distribution to score against (headless backbones)."""

    @abstractmethod
    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Context]:
        """The residual stream entering the first block, and the context the branches need."""

    @abstractmethod
    def branches(self) -> list[Branch]:
        """The 2·L residual branches in order: attention of layer 0, FFN of layer 0, attention of layer 1, …"""

    def transitions(self) -> list[Branch | None]:
        """One entry per stage: the map from the stream leaving the previous stage (for stage 0, `embed`'s
        output) to the residual stream of this stage (a hierarchical model's patch embedding), or None where
        the stage's stream is that input itself (plain models: `[None]`). It runs under the masks of its own
        stage (its writers and norms belong to that stage's residual component)."""
        return [None]

    def pieces(self) -> Pieces:
        """Transitions and branches as one list of steps, for scorers that cache the input of any step."""
        branches, transitions = self.branches(), self.transitions()
        steps: list[Branch] = []
        branch_steps: list[int] = []
        entries: list[int] = []
        for stage, widths in enumerate(self.widths.stages):
            entries.append(len(steps))
            if transitions[stage] is not None:
                steps.append(transitions[stage])
            for branch in branches[len(branch_steps): len(branch_steps) + 2 * widths.num_hidden_layers]:
                branch_steps.append(len(steps))
                steps.append(branch)
        return Pieces(steps, branch_steps, entries)

    @abstractmethod
    def readout(self, hidden: torch.Tensor, context: Context) -> torch.Tensor:
        """Logits of the scored output distribution (final norm and head)."""

    def token_weights(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Per-position weights of the KL sum ([batch, seq]); None when each sample has one output."""
        return None

    def repeat_context(self, context: Context, times: int) -> Context:
        """The context for `times` stacked copies of the batch (variants are stacked along the batch)."""
        return {k: v.repeat(times, *([1] * (v.dim() - 1))) if torch.is_tensor(v) else v for k, v in context.items()}

    def refit_maps(self, layer: int) -> tuple[RefitMap, RefitMap]:
        """The maps writing branches 2·layer (attention) and 2·layer+1 (FFN) into the residual stream, for
        least-squares reconstruction (`upvit_hf.reconstruct`)."""
        raise ValueError(f"{type(self).__name__} does not support reconstruction (no refit_maps)")

    def readout_maps(self) -> list[RefitMap | NormRefit]:
        """What reconstruction refits last so that the readout matches the original's outputs (each map's own
        output: a head's logits), one entry per head `readout` uses; none by default."""
        return []

    # ------------------------------------------------------------------ masking taps
    @abstractmethod
    def residual_writers(self, stage: int = 0) -> list[nn.Module]:
        """Modules whose output is added into the residual stream of `stage` (masking their output zeroes a
        channel; convolutions are masked along their channel axis 1, everything else along the last)."""

    @abstractmethod
    def residual_norms(self, stage: int = 0) -> list[nn.LayerNorm]:
        """Every LayerNorm over the residual width of `stage` (masked ones normalize over kept channels only)."""

    @abstractmethod
    def attention_taps(self, layer: int) -> list[nn.Module]:
        """Modules whose outputs carry attention dims (fused outputs are masked with a tiled mask)."""

    @abstractmethod
    def ffn_tap(self, layer: int) -> nn.Module:
        """The module whose *input* is the FFN activation (the second FFN projection)."""
