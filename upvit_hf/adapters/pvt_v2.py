"""PVTv2 (transformers 5): a hierarchical ViT with convolutions, one residual component per stage.

`model.pvt_v2.encoder.layers[s]` is stage s: `patch_embedding.{proj (Conv2d), layer_norm}`, `blocks[j]` with
`layer_norm_1`, `attention.{query,key,value,proj}` (plus `spatial_reduction` Conv2d and `layer_norm` where
`sr_ratios[s] > 1` or `linear_attention`), `layer_norm_2`, `mlp.{dense1, dwconv.dwconv, dense2}`, and the
stage's final `layer_norm`. The config holds per-stage lists: `hidden_sizes`, `num_attention_heads`,
`mlp_ratios` (FFN width `int(hidden * ratio)`), `depths`, `sr_ratios`.

What a channel is, per stage s:

* **residual** (width `hidden_sizes[s]`): output channels of the stage's patch-embedding conv and its
  LayerNorm; every block LayerNorm; the inputs of query/key/value; the outputs of `proj` and `dense2`; the
  input of `dense1`; the stage's final LayerNorm; the input channels of the next stage's patch-embedding
  conv (or of the classifier). The spatial-reduction conv and its LayerNorm belong here too, on both sides:
  the stock conv is `hidden × hidden` with no config key of its own, and key/value read its output in the
  same index space in which they read the block's LayerNorm where a stage has no reduction. So a kept
  residual channel keeps its SR input and output channel (masking: the conv is a writer, its LayerNorm a
  residual norm).
* **attention** (per block): output dim i of query/key/value, input dim i of `proj`. Stock PVTv2 ties the
  attention width to the stage width (`proj` is `hidden × hidden`, head size `hidden / heads`), as GPT-2
  does: a target must have `heads · head_dim == hidden_size` in every stage. Merging heads keeps that
  width: groups of `old_heads / heads` consecutive heads become one head that keeps its group's top
  `hidden / heads` dims, and `sqrt(new/old head size)` is folded into the query rows.
* **FFN** (per block): row j of `dense1` (and bias), channel j of the depthwise conv (weight and bias; the
  rebuilt conv has `groups` equal to the new width), column j of `dense2`. The stock block builds
  `int(hidden * mlp_ratio)` channels and transformers 5 validates `mlp_ratios` as integers, so a stage's
  FFN width must be a whole multiple of its residual width; the rewrite stores that exact multiple.

`linear_attention=True` (pooled keys/values: adaptive pooling, a 1×1 spatial-reduction conv, LayerNorm,
GELU; a ReLU after `dense1`) is covered by the same maps: pooling and both activations act per channel.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig, PvtV2Backbone, PvtV2ForImageClassification, PvtV2Model

from .base import AnyWidths, Branch, Context, ModelAdapter, ParamSlice, Widths, from_stages


class PvtV2Adapter(ModelAdapter):
    model_types = ("pvt_v2",)
    model_classes = (PvtV2ForImageClassification, PvtV2Model, PvtV2Backbone)
    modality = "image"
    required_inputs = ("pixel_values",)
    half_block_prefixes = (("layer_norm_1.", "attention."), ("layer_norm_2.", "mlp."))
    head_dim_follows_hidden = True
    intermediate_follows_hidden = True

    def __init__(self, model):
        super().__init__(model)
        backbone = model.pvt_v2 if isinstance(model, PvtV2ForImageClassification) else model
        self.stage_modules = backbone.encoder.layers
        self._blocks = nn.ModuleList([block for stage in self.stage_modules for block in stage.blocks])

    # ------------------------------------------------------------------ config
    @classmethod
    def read_widths(cls, config: PretrainedConfig) -> AnyWidths:
        stages = []
        for hidden, heads, ratio, depth in zip(config.hidden_sizes, config.num_attention_heads, config.mlp_ratios,
                                               config.depths):
            stages.append(Widths(hidden, heads, hidden // heads, int(hidden * ratio), depth))
        return from_stages(stages)

    @classmethod
    def write_widths(cls, config: PretrainedConfig, widths: AnyWidths) -> None:
        stages = widths.stages
        config.hidden_sizes = [w.hidden_size for w in stages]
        config.num_attention_heads = [w.num_attention_heads for w in stages]
        config.mlp_ratios = [w.intermediate_size // w.hidden_size for w in stages]  # exact: see check_widths
        config.depths = [w.num_hidden_layers for w in stages]

    def check_widths(self, widths: AnyWidths) -> None:
        for stage, w in enumerate(widths.stages):
            if w.attention_width != w.hidden_size:
                raise ValueError(
                    f"stage {stage}: PVTv2 ties the attention width to the stage width, so hidden_size "
                    f"({w.hidden_size}) must equal num_attention_heads × head_dim "
                    f"({w.num_attention_heads} × {w.head_dim}); pick a hidden_size divisible by the heads "
                    f"and leave head_dim unset"
                )
            if w.intermediate_size % w.hidden_size:
                raise ValueError(
                    f"stage {stage}: PVTv2 builds its FFN as hidden_size × mlp_ratio with an integer ratio "
                    f"(transformers validates `mlp_ratios` as list[int]), so intermediate_size "
                    f"({w.intermediate_size}) must be a multiple of hidden_size ({w.hidden_size})"
                )

    # ------------------------------------------------------------------ where channels live
    def residual_slices(self, stage: int = 0) -> list[ParamSlice]:
        layer = self.stage_modules[stage]
        embedding = layer.patch_embedding
        norms = [p for norm in self.residual_norms(stage) for p in (norm.weight, norm.bias)]
        out_rows = [embedding.proj.weight, embedding.proj.bias, *norms]
        in_cols = []
        for block in layer.blocks:
            attn, mlp = block.attention, block.mlp
            out_rows += [attn.proj.weight, attn.proj.bias, mlp.dense2.weight, mlp.dense2.bias]
            in_cols += [attn.query.weight, attn.key.weight, attn.value.weight, mlp.dense1.weight]
            reduction = getattr(attn, "spatial_reduction", None)
            if reduction is not None:
                out_rows += [reduction.weight, reduction.bias]
                in_cols += [reduction.weight]
        if stage + 1 < len(self.stage_modules):
            in_cols.append(self.stage_modules[stage + 1].patch_embedding.proj.weight)
        elif isinstance(getattr(self.model, "classifier", None), nn.Linear):
            in_cols.append(self.model.classifier.weight)
        return self.slices(out_rows, axis=0) + self.slices(in_cols, axis=1)

    def attention_slices(self, layer: int) -> list[ParamSlice]:
        attn = self._blocks[layer].attention
        rows = [p for proj in (attn.query, attn.key, attn.value) for p in (proj.weight, proj.bias)]
        return self.slices(rows, axis=0) + self.slices([attn.proj.weight], axis=1)

    def query_slices(self, layer: int) -> list[ParamSlice]:
        query = self._blocks[layer].attention.query
        return self.slices([query.weight, query.bias], axis=0)

    def ffn_slices(self, layer: int) -> list[ParamSlice]:
        mlp = self._blocks[layer].mlp
        rows = [mlp.dense1.weight, mlp.dense1.bias, mlp.dwconv.dwconv.weight, mlp.dwconv.dwconv.bias]
        return self.slices(rows, axis=0) + self.slices([mlp.dense2.weight], axis=1)

    def blocks(self) -> nn.ModuleList:
        return self._blocks

    # ------------------------------------------------------------------ running in pieces
    def check_scorable(self) -> None:
        if not isinstance(self.model, PvtV2ForImageClassification):
            raise ValueError(
                f"{type(self.model).__name__} is a headless backbone with no output distribution to score; "
                "score PvtV2ForImageClassification (its channel scores prune the backbone too)"
            )

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Context]:
        """The pixels (stage 0's patch embedding is its transition) and every stage's token grid size."""
        weight = self.stage_modules[0].patch_embedding.proj.weight
        pixel_values = inputs["pixel_values"].to(device=weight.device, dtype=weight.dtype)
        sizes, size = [], tuple(pixel_values.shape[-2:])
        for stage in self.stage_modules:
            conv = stage.patch_embedding.proj
            size = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(size, conv.padding, conv.kernel_size, conv.stride))
            sizes.append(size)
        return pixel_values, {"sizes": sizes}

    def transitions(self) -> list[Branch | None]:
        def entry(stage: int) -> Branch:
            def run(hidden: torch.Tensor, context: Context) -> torch.Tensor:
                if stage > 0:  # the previous stage's final norm, back to [B, C, H, W]
                    height, width = context["sizes"][stage - 1]
                    hidden = self.stage_modules[stage - 1].layer_norm(hidden)
                    hidden = hidden.reshape(hidden.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()
                return self.stage_modules[stage].patch_embedding(hidden)[0]
            return run

        return [entry(stage) for stage in range(len(self.stage_modules))]

    def branches(self) -> list[Branch]:
        def attention_half(block, stage: int) -> Branch:
            return lambda h, ctx: h + block.drop_path(block.attention(block.layer_norm_1(h), *ctx["sizes"][stage])[0])

        def ffn_half(block, stage: int) -> Branch:
            return lambda h, ctx: h + block.drop_path(block.mlp(block.layer_norm_2(h), *ctx["sizes"][stage]))

        return [half for s, stage in enumerate(self.stage_modules) for block in stage.blocks
                for half in (attention_half(block, s), ffn_half(block, s))]

    def readout(self, hidden: torch.Tensor, context: Context) -> torch.Tensor:
        return self.model.classifier(self.stage_modules[-1].layer_norm(hidden).mean(dim=1))

    # ------------------------------------------------------------------ masking taps
    def residual_writers(self, stage: int = 0) -> list[nn.Module]:
        layer = self.stage_modules[stage]
        writers = [layer.patch_embedding.proj]
        for block in layer.blocks:
            writers += [block.attention.proj, block.mlp.dense2]
            if getattr(block.attention, "spatial_reduction", None) is not None:
                writers.append(block.attention.spatial_reduction)
        return writers

    def residual_norms(self, stage: int = 0) -> list[nn.LayerNorm]:
        layer = self.stage_modules[stage]
        norms = [layer.patch_embedding.layer_norm]
        for block in layer.blocks:
            norms += [block.layer_norm_1, block.layer_norm_2]
            if getattr(block.attention, "layer_norm", None) is not None:
                norms.append(block.attention.layer_norm)
        return norms + [layer.layer_norm]

    def attention_taps(self, layer: int) -> list[nn.Module]:
        attn = self._blocks[layer].attention
        return [attn.query, attn.key, attn.value]

    def ffn_tap(self, layer: int) -> nn.Module:
        return self._blocks[layer].mlp.dense2
