"""Transformer-XL (our implementation for transformers 5, `upvit_hf.models.transfo_xl`).

The backbone is `model.transformer` (or the `TransfoXLModel` itself) with `word_emb` (adaptive input:
`emb_layers[i]`, `emb_projs[i]`), `layers[i].dec_attn` (`qkv_net`, `r_net`, `o_net`, `layer_norm`, and
`r_w_bias`/`r_r_bias` [n_head, d_head] when `untie_r`; otherwise one shared pair on the backbone) and
`layers[i].pos_ff` (`CoreNet.0`, `CoreNet.3`, `layer_norm`); the LM head is the adaptive softmax `crit`.

Layout facts this adapter relies on:

* Activations are batch-first. Each half of a layer does its own residual connection and LayerNorm (pre- or
  post-norm); there is no final LayerNorm.
* Residual channels: rows of every `emb_projs[i]` / `crit.out_projs[i]` [d_model, d_emb_i] (the projections
  to and from the embedding widths). Without projections (`div_val == 1` and `d_embed == d_model`) the tables
  themselves are d_model wide: the columns of `emb_layers.0`, `crit.out_layers.0` and `crit.cluster_weight`
  are residual, and `d_embed` follows `d_model` in the pruned config. `r_net`'s *input* is the sinusoidal
  position embedding, not the residual stream: the pruned config keeps its width in `d_pos_emb`.
* Attention dim i: q, k, v rows i, A+i, 2A+i of `qkv_net` (A = n_head·d_head), row i of `r_net`, entry i of
  the flattened `r_w_bias`/`r_r_bias`, column i of `o_net`. The scale 1/sqrt(d_head) multiplies both bias
  terms, so a changed d_head is folded into the q rows *and* both biases (`query_slices`).
* The embedding is multiplied by sqrt(d_model) and the tables are tied to the softmax, so the factor cannot be
  folded into weights: the pruned config carries the original factor in `emb_scale`.
* Shared r biases (`untie_r=False`) cannot stay shared once layers keep different attention dims, and no other
  per-layer tensor can absorb them (the bias terms are per query *and* key/distance). The pruned model is
  therefore `untie_r=True` with one pair per layer (`surgery_state` copies the shared pair to every layer's
  `dec_attn.r_[wr]_bias` key, stored flat so that the flattened index is the attention dim; `finish_surgery`
  reshapes them to [n_head, d_head] and sets `untie_r=True`), which computes exactly what the shared pair did.
* Scoring runs every proxy batch as one segment without memory (mlen = 0): the model's forward with
  `mems=[empty] * n_layer` (equal to `mems=None` when `mem_len == 0`). Transformer-XL has no padding mask,
  so every position counts and an `attention_mask` with zeros is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerFast
from transformers.utils import cached_file

from ..models.transfo_xl import TransfoXLLMHeadModel, TransfoXLModel
from ..models.transfo_xl.tokenization_transfo_xl import VOCAB_FILE, convert_vocab
from .base import Branch, Context, ModelAdapter, ParamSlice, RefitMap, Widths

R_BIASES = ("r_w_bias", "r_r_bias")


def _unique(params: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """Each parameter once (tied ones appear under several modules; `slices` names all their keys)."""
    seen: dict[int, torch.Tensor] = {}
    for p in params:
        if p is not None:
            seen.setdefault(id(p), p)
    return list(seen.values())


class TransfoXLAdapter(ModelAdapter):
    model_types = ("transfo-xl",)
    model_classes = (TransfoXLLMHeadModel, TransfoXLModel)
    modality = "text"
    uses_memory = True
    needs_remote_code = True  # removed from transformers 5: our implementation, registered by `import upvit_hf`
    required_inputs = ("input_ids",)
    optional_inputs = ("attention_mask",)

    @contextmanager
    def memory_settings(self, *, mem_len: int, clamp_len: int, same_length: bool) -> Iterator[None]:
        """Evaluate with these memory settings (the model reads them from its config on every forward)."""
        config = self.model.config
        wanted = {"mem_len": mem_len, "clamp_len": clamp_len, "same_length": same_length}
        saved = {key: getattr(config, key) for key in wanted}
        for key, value in wanted.items():
            setattr(config, key, value)
        try:
            yield
        finally:
            for key, value in saved.items():
                setattr(config, key, value)

    @classmethod
    def legacy_tokenizer(cls, name_or_path: str) -> PreTrainedTokenizerFast | None:
        """The tokenizer of a 4.x checkpoint's ``vocab.pkl`` (read with a restricted unpickler), if it has one."""
        vocab = cached_file(name_or_path, VOCAB_FILE, _raise_exceptions_for_missing_entries=False)
        return None if vocab is None else convert_vocab(vocab)
    half_block_prefixes = (("dec_attn.",), ("pos_ff.",))

    def __init__(self, model):
        super().__init__(model)
        self.backbone: TransfoXLModel = model if isinstance(model, TransfoXLModel) else model.transformer
        self.layers = self.backbone.layers
        self.crit = getattr(model, "crit", None)
        self._prefixes = [self.block_prefix(i) for i in range(len(self.layers))]

    # ------------------------------------------------------------------ config
    @classmethod
    def read_widths(cls, config: PretrainedConfig) -> Widths:
        return Widths(config.d_model, config.n_head, config.d_head, config.d_inner, config.n_layer)

    @classmethod
    def write_widths(cls, config: PretrainedConfig, widths: Widths) -> None:
        # constants derived from the old width, read before d_model changes (explicit values stay as they are)
        config.d_pos_emb = config.effective_d_pos_emb
        config.emb_scale = config.effective_emb_scale
        if not cls._projected(config):  # the tables are the residual stream
            config.d_embed = widths.hidden_size
        config.d_model = widths.hidden_size
        config.n_head = widths.num_attention_heads
        config.d_head = widths.head_dim
        config.d_inner = widths.intermediate_size
        config.n_layer = widths.num_hidden_layers

    @staticmethod
    def _projected(config: PretrainedConfig) -> bool:
        """Whether embeddings and softmax project between d_model and the table widths."""
        return config.div_val != 1 or config.d_embed != config.d_model

    def check_widths(self, widths: Widths) -> None:
        config = self.model.config
        if config.div_val == 1 and config.d_embed != config.d_model and widths.hidden_size == config.d_embed:
            raise ValueError(
                f"hidden_size={widths.hidden_size} equals d_embed={config.d_embed}: with div_val=1 the Transformer-XL "
                "architecture drops the embedding/softmax projections when d_model == d_embed, so this model's "
                f"projections cannot be kept; choose any other hidden_size from 1 to {config.d_model}"
            )

    # ------------------------------------------------------------------ where channels live
    def _bias_key(self, layer: int, which: str) -> str:
        """The per-layer key of an r bias in `surgery_state` (the stock key when `untie_r`)."""
        return f"{self._prefixes[layer]}dec_attn.{which}"

    def surgery_state(self) -> dict[str, torch.Tensor]:
        state = dict(self.model.state_dict())
        shared = dict(zip(R_BIASES, self.backbone.shared_r_biases()))
        for which, param in shared.items():
            if param is not None:
                for name in self.names(param):
                    state.pop(name)
        for layer in range(len(self.layers)):
            for which in R_BIASES:
                param = shared[which] if shared[which] is not None else getattr(self.layers[layer].dec_attn, which)
                state[self._bias_key(layer, which)] = param.detach().reshape(-1)  # flat index = attention dim
        return state

    def finish_surgery(self, state: dict[str, torch.Tensor], config: PretrainedConfig) -> None:
        for layer in range(config.n_layer):
            for which in R_BIASES:
                key = self._bias_key(layer, which)
                state[key] = state[key].reshape(config.n_head, config.d_head)
        config.untie_r = True

    def _bias_slices(self, layer: int) -> list[ParamSlice]:
        return [ParamSlice(self._bias_key(layer, which), 0) for which in R_BIASES]

    def residual_slices(self, stage: int = 0) -> list[ParamSlice]:
        emb, crit = self.backbone.word_emb, self.crit
        rows, columns = [], []
        if self._projected(self.model.config):
            rows += list(emb.emb_projs) + (list(crit.out_projs) if crit is not None else [])
        else:
            columns.append(emb.emb_layers[0].weight)
            if crit is not None:
                columns += [crit.out_layers[0].weight, getattr(crit, "cluster_weight", None)]
        for layer in self.layers:
            attn, ff = layer.dec_attn, layer.pos_ff
            columns += [attn.qkv_net.weight, ff.CoreNet[0].weight]  # readers of the residual stream
            rows += [attn.o_net.weight, ff.CoreNet[3].weight, ff.CoreNet[3].bias]  # writers into it
        rows += [p for norm in self.residual_norms() for p in (norm.weight, norm.bias)]
        return self.slices(_unique(rows), axis=0) + self.slices(_unique(columns), axis=1)

    def attention_slices(self, layer: int) -> list[ParamSlice]:
        attn = self.layers[layer].dec_attn
        width = self.widths.attention_width
        return (
            self.slices([attn.qkv_net.weight], axis=0, offsets=(0, width, 2 * width))
            + self.slices([attn.r_net.weight], axis=0)
            + self._bias_slices(layer)
            + self.slices([attn.o_net.weight], axis=1)
        )

    def query_slices(self, layer: int) -> list[ParamSlice]:
        # scale · [(q + r_w_bias)·k + (q + r_r_bias)·r]: the q rows and both biases carry the scale
        return self.slices([self.layers[layer].dec_attn.qkv_net.weight], axis=0) + self._bias_slices(layer)

    def ffn_slices(self, layer: int) -> list[ParamSlice]:
        core = self.layers[layer].pos_ff.CoreNet
        return self.slices([core[0].weight, core[0].bias], axis=0) + self.slices([core[3].weight], axis=1)

    def blocks(self) -> nn.ModuleList:
        return self.layers

    # ------------------------------------------------------------------ running in pieces
    def check_scorable(self) -> None:
        if type(self.model) is TransfoXLModel:
            raise ValueError(
                "TransfoXLModel is a headless backbone with no output distribution to score; score "
                "TransfoXLLMHeadModel instead (its channel scores prune the backbone too)"
            )

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, Context]:
        backbone = self.backbone
        input_ids = inputs["input_ids"].to(backbone.word_emb.emb_layers[0].weight.device)
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask.bool().all()):
            raise ValueError(
                "Transformer-XL has no padding mask: proxy batches must hold sequences of equal length "
                "(attention_mask all ones, or no attention_mask)"
            )
        hidden = backbone.embed(input_ids)
        pos_emb, attn_mask = backbone.relative_positions(input_ids.shape[1], 0, hidden.device, hidden.dtype)
        # One segment without memory. The positions are the same for every row (pos_emb has batch 1 and
        # broadcasts, also through a per-row mask on r_net's output), so they ride in the context as a tuple,
        # which repeat_context and row slicing leave as it is.
        return backbone.drop(hidden), {"positions": (backbone.drop(pos_emb), attn_mask)}

    def branches(self) -> list[Branch]:
        backbone = self.backbone

        def attention_half(index: int) -> Branch:
            return lambda h, ctx: backbone.run_attention(index, h, *ctx["positions"])[0]

        def ffn_half(index: int) -> Branch:
            return lambda h, ctx: backbone.run_feed_forward(index, h)

        return [half for i in range(len(self.layers)) for half in (attention_half(i), ffn_half(i))]

    def refit_maps(self, layer: int) -> tuple[RefitMap, RefitMap]:
        # o_net has no bias: the attention refit has no bias compensation. No `readout_maps`: the adaptive
        # softmax shares its weights with the embedding and its logits are no single linear head over a norm.
        block = self.layers[layer]
        return RefitMap(block.dec_attn.o_net), RefitMap(block.pos_ff.CoreNet[3])

    def readout(self, hidden: torch.Tensor, context: Context) -> torch.Tensor:
        """Log-probabilities of the full adaptive softmax (normalized logits)."""
        hidden = self.backbone.drop(hidden)
        return self.model.log_probs(hidden) if isinstance(self.model, TransfoXLLMHeadModel) else hidden

    # ------------------------------------------------------------------ masking taps
    def residual_writers(self, stage: int = 0) -> list[nn.Module]:
        return [m for layer in self.layers for m in (layer.dec_attn.o_net, layer.pos_ff.CoreNet[3])]

    def residual_norms(self, stage: int = 0) -> list[nn.LayerNorm]:
        return [n for layer in self.layers for n in (layer.dec_attn.layer_norm, layer.pos_ff.layer_norm)]

    def attention_taps(self, layer: int) -> list[nn.Module]:
        attn = self.layers[layer].dec_attn
        return [attn.qkv_net, attn.r_net]  # fused q|k|v (mask tiled three times); r_net [1, klen, A] broadcasts

    def ffn_tap(self, layer: int) -> nn.Module:
        return self.layers[layer].pos_ff.CoreNet[3]
