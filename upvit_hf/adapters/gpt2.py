"""GPT-2 (transformers 5): the backbone is `model.transformer` with `wte`, `wpe`, `h[i]` blocks holding
`ln_1`, `attn.{c_attn,c_proj}`, `ln_2`, `mlp.{c_fc,c_proj}`, and `ln_f`.

Layout facts this adapter relies on:

* `Conv1D` weights are `[in, out]` (transposed w.r.t. `nn.Linear`): an output channel is a *column*.
* `attn.c_attn` fuses q, k and v: attention dim i is column i, E+i and 2E+i (E = the attention width).
* Stock GPT-2 ties the attention width to `n_embd` (`head_dim = n_embd // n_head`), so a pruned model
  must keep `head_dim == hidden_size // num_attention_heads`.
* `lm_head.weight` is tied to `transformer.wte.weight`: `state_dict()` holds both keys (sharing storage)
  and `named_parameters(remove_duplicate=False)` lists both names for one parameter, so surgery slices
  both keys identically and the freshly built (tied) model loads them into its one shared parameter.
* The attention scale is `head_dim**-0.5` when `scale_attn_weights`, further divided by `layer_idx + 1`
  when `scale_attn_by_inverse_layer_idx`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import (
    GPT2DoubleHeadsModel,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPT2Model,
    PretrainedConfig,
)
from transformers.masking_utils import create_causal_mask

from .base import Branch, Context, ModelAdapter, NormRefit, ParamSlice, RefitMap, Widths


class GPT2Adapter(ModelAdapter):
    model_types = ("gpt2",)
    model_classes = (GPT2LMHeadModel, GPT2Model, GPT2ForSequenceClassification, GPT2DoubleHeadsModel)
    modality = "text"
    required_inputs = ("input_ids",)
    optional_inputs = ("attention_mask", "position_ids", "token_type_ids")
    half_block_prefixes = (("ln_1.", "attn."), ("ln_2.", "mlp."))
    head_dim_follows_hidden = True

    def __init__(self, model):
        if getattr(model.config, "add_cross_attention", False):
            raise ValueError(
                f"{type(model).__name__} with add_cross_attention=True is not supported: only decoder-only "
                "GPT-2 models (no cross-attention layers) can be scored and pruned"
            )
        config = model.config
        if isinstance(model, GPT2DoubleHeadsModel) and not (
            config.summary_use_proj and config.summary_proj_to_labels and config.num_labels > 0
        ):
            raise ValueError(
                "GPT2DoubleHeadsModel is supported with a multiple-choice summary projecting to the labels only "
                "(summary_use_proj=True, summary_proj_to_labels=True, num_labels > 0); another summary keeps the "
                "hidden size, whose channels would be pruned"
            )
        super().__init__(model)
        self.backbone: GPT2Model = model if isinstance(model, GPT2Model) else model.transformer
        self.layers = self.backbone.h

    # ------------------------------------------------------------------ config
    @classmethod
    def max_positions(cls, config: PretrainedConfig) -> int | None:
        return config.n_positions

    @classmethod
    def read_widths(cls, config: PretrainedConfig) -> Widths:
        hidden, heads = config.n_embd, config.n_head
        inner = config.n_inner if config.n_inner is not None else 4 * hidden
        return Widths(hidden, heads, hidden // heads, inner, config.n_layer)

    @classmethod
    def write_widths(cls, config: PretrainedConfig, widths: Widths) -> None:
        config.n_embd = widths.hidden_size
        config.n_head = widths.num_attention_heads
        config.n_inner = widths.intermediate_size
        config.n_layer = widths.num_hidden_layers

    def check_widths(self, widths: Widths) -> None:
        hidden, heads = widths.hidden_size, widths.num_attention_heads
        if hidden % heads or widths.head_dim != hidden // heads:
            old = self.widths.num_attention_heads
            allowed = [h for h in range(1, old + 1) if old % h == 0 and hidden % h == 0]
            raise ValueError(
                f"GPT-2 ties the attention width to the hidden size (head_dim = hidden_size // num_attention_heads), "
                f"so num_attention_heads must divide both the model's {old} heads and hidden_size={hidden} "
                f"(allowed here: {allowed}) and head_dim, if given, must equal hidden_size // num_attention_heads; "
                f"got num_attention_heads={heads}, head_dim={widths.head_dim}"
            )

    def query_scale(self, old_head_dim: int, new_head_dim: int) -> float:
        # head_dim enters the scale only through `scale_attn_weights`; the inverse-layer-index factor is
        # independent of the width.
        return super().query_scale(old_head_dim, new_head_dim) if self.model.config.scale_attn_weights else 1.0

    def layer_index_scale(self, old_index: int, new_index: int) -> float:
        if self.model.config.scale_attn_by_inverse_layer_idx:
            return (new_index + 1) / (old_index + 1)
        return 1.0

    # ------------------------------------------------------------------ where channels live
    def _head_weights(self) -> list[torch.Tensor]:
        """Head weights reading the residual stream (input columns), each parameter once."""
        model = self.model
        heads = []
        if isinstance(model, (GPT2LMHeadModel, GPT2DoubleHeadsModel)):
            head = model.lm_head.weight
            heads += [] if head is self.backbone.wte.weight else [head]  # tied: already named via wte
        if isinstance(model, GPT2DoubleHeadsModel):
            heads.append(model.multiple_choice_head.summary.weight)
        if isinstance(model, GPT2ForSequenceClassification):
            heads.append(model.score.weight)
        return heads

    def residual_slices(self, stage: int = 0) -> list[ParamSlice]:
        # nn.Embedding / nn.Linear heads: [*, hidden] -> axis 1; Conv1D [in, out].
        columns = [self.backbone.wte.weight, self.backbone.wpe.weight, *self._head_weights()]
        rows = []  # Conv1D inputs (axis 0), 1-d tensors (axis 0)
        for layer in self.layers:
            attn, mlp = layer.attn, layer.mlp
            columns += [attn.c_proj.weight, mlp.c_proj.weight]  # outputs into the residual stream
            rows += [attn.c_proj.bias, mlp.c_proj.bias, attn.c_attn.weight, mlp.c_fc.weight]
        rows += [p for norm in self.residual_norms() for p in (norm.weight, norm.bias)]
        return self.slices(columns, axis=1) + self.slices(rows, axis=0)

    def attention_slices(self, layer: int) -> list[ParamSlice]:
        attn = self.layers[layer].attn
        width = self.widths.attention_width
        qkv = (0, width, 2 * width)
        return (
            self.slices([attn.c_attn.weight], axis=1, offsets=qkv)
            + self.slices([attn.c_attn.bias], axis=0, offsets=qkv)
            + self.slices([attn.c_proj.weight], axis=0)
        )

    def query_slices(self, layer: int) -> list[ParamSlice]:
        attn = self.layers[layer].attn
        return self.slices([attn.c_attn.weight], axis=1) + self.slices([attn.c_attn.bias], axis=0)

    def ffn_slices(self, layer: int) -> list[ParamSlice]:
        mlp = self.layers[layer].mlp
        return self.slices([mlp.c_fc.weight], axis=1) + self.slices([mlp.c_fc.bias, mlp.c_proj.weight], axis=0)

    def blocks(self) -> nn.ModuleList:
        return self.layers

    # ------------------------------------------------------------------ running in pieces
    def check_scorable(self) -> None:
        if type(self.model) is GPT2Model:
            raise ValueError(
                "GPT2Model is a headless backbone with no output distribution to score; score GPT2LMHeadModel "
                "(or GPT2ForSequenceClassification) instead (its channel scores prune the backbone too)"
            )

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Context]:
        backbone = self.backbone
        device = backbone.wte.weight.device
        input_ids = inputs["input_ids"].to(device)
        batch, length = input_ids.shape
        position_ids = inputs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(length, device=device).unsqueeze(0)
        position_ids = position_ids.to(device).view(-1, length).expand(batch, -1)
        hidden = backbone.wte(input_ids) + backbone.wpe(position_ids)
        if inputs.get("token_type_ids") is not None:
            hidden = hidden + backbone.wte(inputs["token_type_ids"].to(device).view(-1, length))
        hidden = backbone.drop(hidden)

        attention_mask = inputs.get("attention_mask")
        context: Context = {
            "attention_mask": None if attention_mask is None else attention_mask.to(device).view(batch, -1),
            # GPT2Model hands position ids to the mask builder (packed-sequence detection without a mask)
            "position_ids": position_ids.contiguous() if inputs.get("position_ids") is not None else None,
        }
        if isinstance(self.model, GPT2ForSequenceClassification):
            context["last_token"] = self._last_token(input_ids)
        return hidden, context

    def _last_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index of the classified position per row, as GPT2ForSequenceClassification picks it."""
        batch, length = input_ids.shape
        pad = self.model.config.pad_token_id
        if pad is None:
            if batch != 1:
                raise ValueError(
                    "GPT2ForSequenceClassification needs config.pad_token_id to find the last token of each "
                    "sequence in a batch of more than one; set it or use proxy batches of one sequence"
                )
            return torch.full((batch,), length - 1, dtype=torch.long, device=input_ids.device)
        positions = torch.arange(length, device=input_ids.device)
        return (positions * (input_ids != pad)).argmax(-1)

    def _mask(self, hidden: torch.Tensor, context: Context):
        """The attention mask GPT2Model builds (causal + padding), for the configured attention backend."""
        return create_causal_mask(
            config=self.backbone.config,
            inputs_embeds=hidden,
            attention_mask=context.get("attention_mask"),
            cache=None,
            position_ids=context.get("position_ids"),
        )

    def branches(self) -> list[Branch]:
        def attention_half(layer) -> Branch:
            def branch(h: torch.Tensor, ctx: Context) -> torch.Tensor:
                return h + layer.attn(layer.ln_1(h), attention_mask=self._mask(h, ctx))[0]

            return branch

        def ffn_half(layer) -> Branch:
            return lambda h, ctx: h + layer.mlp(layer.ln_2(h))

        return [half for layer in self.layers for half in (attention_half(layer), ffn_half(layer))]

    def refit_maps(self, layer: int) -> tuple[RefitMap, RefitMap]:
        block = self.layers[layer]  # Conv1D weights are [in, out]
        return RefitMap(block.attn.c_proj, input_axis=0), RefitMap(block.mlp.c_proj, input_axis=0)

    def readout_maps(self) -> list[RefitMap | NormRefit]:
        model = self.model
        if isinstance(model, GPT2ForSequenceClassification):
            return [RefitMap(model.score)]
        if isinstance(model, (GPT2LMHeadModel, GPT2DoubleHeadsModel)):
            head = model.lm_head  # stock GPT-2 ties it to the input embedding: then ln_f is refit through it
            return [NormRefit(self.backbone.ln_f, head) if head.weight is self.backbone.wte.weight else RefitMap(head)]
        return []

    def readout(self, hidden: torch.Tensor, context: Context) -> torch.Tensor:
        model = self.model
        if isinstance(model, GPT2ForSequenceClassification):
            last = hidden[torch.arange(hidden.shape[0], device=hidden.device), context["last_token"]]
            return model.score(self.backbone.ln_f(last))
        hidden = self.backbone.ln_f(hidden)
        # GPT2DoubleHeadsModel: the language-model distribution (its multiple-choice head has one logit per choice)
        return model.lm_head(hidden) if isinstance(model, (GPT2LMHeadModel, GPT2DoubleHeadsModel)) else hidden

    def token_weights(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        if isinstance(self.model, GPT2ForSequenceClassification):
            return None
        mask = inputs.get("attention_mask")
        if mask is None:
            return torch.ones(inputs["input_ids"].shape, device=inputs["input_ids"].device)
        return mask.view(inputs["input_ids"].shape[0], -1)

    # ------------------------------------------------------------------ masking taps
    def residual_writers(self, stage: int = 0) -> list[nn.Module]:
        return [m for layer in self.layers for m in (layer.attn.c_proj, layer.mlp.c_proj)]

    def residual_norms(self, stage: int = 0) -> list[nn.LayerNorm]:
        return [n for layer in self.layers for n in (layer.ln_1, layer.ln_2)] + [self.backbone.ln_f]

    def attention_taps(self, layer: int) -> list[nn.Module]:
        return [self.layers[layer].attn.c_attn]  # fused q|k|v output: the mask is tiled three times

    def ffn_tap(self, layer: int) -> nn.Module:
        return self.layers[layer].mlp.c_proj
