"""ViT and DeiT (transformers 5): the backbone is `model.vit` / `model.deit` with `layers[i]` holding
`attention.{q,k,v,o}_proj`, `layernorm_before/after` and `mlp.fc1/fc2`; the config honours `head_dim`.

Heads: `classifier` (image classification), `cls_classifier` + `distillation_classifier` (DeiT with teacher),
`pooler.dense` (backbones), `decoder.0` (masked image modeling: a 1×1 convolution from the hidden size to
`encoder_stride²·num_channels` pixels; it reconstructs pixels, so there is no distribution to score).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import (
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    DeiTForMaskedImageModeling,
    DeiTModel,
    PretrainedConfig,
    ViTForImageClassification,
    ViTForMaskedImageModeling,
    ViTModel,
)

from .base import Branch, Context, ModelAdapter, NormRefit, ParamSlice, RefitMap, Widths


class ViTAdapter(ModelAdapter):
    model_types = ("vit", "deit")
    model_classes = (
        ViTForImageClassification,
        ViTModel,
        DeiTForImageClassification,
        DeiTForImageClassificationWithTeacher,
        DeiTModel,
        ViTForMaskedImageModeling,
        DeiTForMaskedImageModeling,
    )
    modality = "image"
    required_inputs = ("pixel_values",)
    half_block_prefixes = (("layernorm_before.", "attention."), ("layernorm_after.", "mlp."))

    def __init__(self, model):
        super().__init__(model)
        self.backbone = model.base_model
        self.layers = self.backbone.layers

    # ------------------------------------------------------------------ config
    @classmethod
    def read_widths(cls, config: PretrainedConfig) -> Widths:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return Widths(config.hidden_size, heads, head_dim, config.intermediate_size, config.num_hidden_layers)

    @classmethod
    def write_widths(cls, config: PretrainedConfig, widths: Widths) -> None:
        config.hidden_size = widths.hidden_size
        config.num_attention_heads = widths.num_attention_heads
        config.head_dim = widths.head_dim
        config.intermediate_size = widths.intermediate_size
        config.num_hidden_layers = widths.num_hidden_layers

    def build(self, config: PretrainedConfig):
        if isinstance(self.model, (ViTModel, DeiTModel)):
            return type(self.model)(config, add_pooling_layer=self.model.pooler is not None)
        return type(self.model)(config)

    # ------------------------------------------------------------------ where channels live
    def _heads(self) -> list[nn.Linear]:
        model = self.model
        if isinstance(model, DeiTForImageClassificationWithTeacher):
            return [model.cls_classifier, model.distillation_classifier]
        if isinstance(model, (ViTModel, DeiTModel)):
            return [model.pooler.dense] if model.pooler is not None else []
        if isinstance(model, (ViTForMaskedImageModeling, DeiTForMaskedImageModeling)):
            return [model.decoder[0]]
        return [model.classifier]

    def residual_slices(self, stage: int = 0) -> list[ParamSlice]:
        emb = self.backbone.embeddings
        tokens = [emb.cls_token, getattr(emb, "distillation_token", None), emb.position_embeddings, emb.mask_token]
        out_rows = [emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias]
        in_cols = [head.weight for head in self._heads()]  # Linear [out, hidden], Conv2d [out, hidden, 1, 1]
        for layer in self.layers:
            attn, mlp = layer.attention, layer.mlp
            out_rows += [attn.o_proj.weight, attn.o_proj.bias, mlp.fc2.weight, mlp.fc2.bias]
            in_cols += [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight, mlp.fc1.weight]
        norms = [p for norm in self.residual_norms() for p in (norm.weight, norm.bias)]
        return self.slices(tokens, axis=2) + self.slices(out_rows + norms, axis=0) + self.slices(in_cols, axis=1)

    def attention_slices(self, layer: int) -> list[ParamSlice]:
        attn = self.layers[layer].attention
        rows = [p for proj in (attn.q_proj, attn.k_proj, attn.v_proj) for p in (proj.weight, proj.bias)]
        return self.slices(rows, axis=0) + self.slices([attn.o_proj.weight], axis=1)

    def query_slices(self, layer: int) -> list[ParamSlice]:
        q_proj = self.layers[layer].attention.q_proj
        return self.slices([q_proj.weight, q_proj.bias], axis=0)

    def ffn_slices(self, layer: int) -> list[ParamSlice]:
        mlp = self.layers[layer].mlp
        return self.slices([mlp.fc1.weight, mlp.fc1.bias], axis=0) + self.slices([mlp.fc2.weight], axis=1)

    def blocks(self) -> nn.ModuleList:
        return self.layers

    # ------------------------------------------------------------------ running in pieces
    def check_scorable(self) -> None:
        if isinstance(self.model, (ViTModel, DeiTModel, ViTForMaskedImageModeling, DeiTForMaskedImageModeling)):
            what = "reconstructs pixels" if hasattr(self.model, "decoder") else "is a headless backbone"
            raise ValueError(
                f"{type(self.model).__name__} {what}: it has no output distribution to score; score the model with "
                "its classification head (its channel scores prune this model too) or use the magnitude criterion"
            )

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Context]:
        projection = self.backbone.embeddings.patch_embeddings.projection
        pixel_values = inputs["pixel_values"].to(device=projection.weight.device, dtype=projection.weight.dtype)
        return self.backbone.embeddings(pixel_values), {}

    def branches(self) -> list[Branch]:
        def attention_half(layer) -> Branch:
            return lambda h, ctx: h + layer.dropout(layer.attention(layer.layernorm_before(h))[0])

        def ffn_half(layer) -> Branch:
            return lambda h, ctx: h + layer.dropout(layer.mlp(layer.layernorm_after(h)))

        return [half for layer in self.layers for half in (attention_half(layer), ffn_half(layer))]

    def refit_maps(self, layer: int) -> tuple[RefitMap, RefitMap]:
        block = self.layers[layer]
        return RefitMap(block.attention.o_proj), RefitMap(block.mlp.fc2)

    def readout_maps(self) -> list[RefitMap | NormRefit]:
        model = self.model
        if isinstance(model, DeiTForImageClassificationWithTeacher):
            return [RefitMap(model.cls_classifier), RefitMap(model.distillation_classifier)]
        head = getattr(model, "classifier", None)
        return [RefitMap(head)] if isinstance(head, nn.Linear) else []  # nn.Identity without labels

    def readout(self, hidden: torch.Tensor, context: Context) -> torch.Tensor:
        sequence = self.backbone.layernorm(hidden)
        model = self.model
        if isinstance(model, DeiTForImageClassificationWithTeacher):
            return (model.cls_classifier(sequence[:, 0]) + model.distillation_classifier(sequence[:, 1])) / 2
        return model.classifier(sequence[:, 0])

    # ------------------------------------------------------------------ masking taps
    def residual_writers(self, stage: int = 0) -> list[nn.Module]:
        return [m for layer in self.layers for m in (layer.attention.o_proj, layer.mlp.fc2)]

    def residual_norms(self, stage: int = 0) -> list[nn.LayerNorm]:
        norms = [n for layer in self.layers for n in (layer.layernorm_before, layer.layernorm_after)]
        return norms + [self.backbone.layernorm]

    def attention_taps(self, layer: int) -> list[nn.Module]:
        attn = self.layers[layer].attention
        return [attn.q_proj, attn.k_proj, attn.v_proj]

    def ffn_tap(self, layer: int) -> nn.Module:
        return self.layers[layer].mlp.fc2
