"""Transformer-XL (Dai et al., 2019) for transformers 5.

Transformers 5 dropped Transformer-XL; this is a fresh implementation that loads checkpoints written by
transformers 4.x unchanged (same parameter names) and reproduces their outputs.

Layout: every hidden activation is batch-first, ``[batch, seq, features]``, so a per-sample channel mask of shape
``[batch, 1, width]`` broadcasts on the outputs of ``qkv_net``, ``r_net``, ``o_net``, the feed-forward linears and
the LayerNorms. Memories (``mems``) keep the 4.x layout ``[mem_len, batch, d_model]`` (one tensor per layer, holding
the *inputs* of that layer for past tokens) at the public API and are transposed at the boundary.

Piecewise use (what a pruning adapter needs) -- ``TransfoXLModel`` exposes

* ``embed(input_ids)`` -> scaled, projected word embeddings ``[b, q, d_model]``;
* ``relative_positions(qlen, mlen)`` -> ``(pos_emb [1, mlen + qlen, d_pos_emb], attn_mask [qlen, mlen + qlen])``;
* ``run_attention(i, ...)`` / ``run_feed_forward(i, hidden)`` / ``run_layer(i, ...)`` -> one half / all of layer i,
  each half doing its own residual connection and LayerNorm;
* ``init_mems`` / ``update_mems`` for the memory bookkeeping;

and ``TransfoXLLMHeadModel.log_probs(hidden)`` applies the adaptive-softmax head. ``forward`` is built from exactly
these pieces.

This file is copied next to saved checkpoints for ``trust_remote_code``: it imports only torch, transformers and
the sibling configuration module.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_transfo_xl import TransfoXLConfig

# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TransfoXLModelOutput(ModelOutput):
    """Output of `TransfoXLModel`.

    Args:
        last_hidden_state: ``[batch, seq, d_model]`` output of the last layer (after the final dropout).
        mems: one ``[mem_len, batch, d_model]`` tensor per layer (the 4.x layout); feed them back as ``mems`` to
            continue the text. ``None`` when ``config.mem_len == 0``.
        hidden_states: input of every layer plus ``last_hidden_state``, each ``[batch, seq, d_model]``.
        attentions: per layer, ``[batch, n_head, seq, mem_len + seq]`` attention probabilities.
    """

    last_hidden_state: torch.FloatTensor | None = None
    mems: list[torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class TransfoXLLMHeadModelOutput(ModelOutput):
    """Output of `TransfoXLLMHeadModel`.

    Args:
        loss: mean negative log-likelihood over the non-ignored shifted labels (when ``labels`` are given).
        logits: ``[batch, kept_seq, vocab_size]`` log-probabilities of the adaptive softmax. They are normalized
            already, so they behave like logits everywhere (softmax, argmax, KL).
        mems: see `TransfoXLModelOutput`.
        hidden_states: see `TransfoXLModelOutput`.
        attentions: see `TransfoXLModelOutput`.
        losses: ``[batch, seq - 1]`` per-token negative log-likelihood of ``labels[:, 1:]`` (0 where the label is
            -100), in position order.
        prediction_scores: the same tensor as ``logits`` (4.x name).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mems: list[torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    losses: torch.FloatTensor | None = None
    prediction_scores: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


class TransfoXLPositionalEmbedding(nn.Module):
    """Sinusoidal embedding of relative distances.

    Parameter-free: the inverse frequencies are recomputed on every call (4.x stored them in a buffer
    ``pos_emb.inv_freq``, which loading ignores), so nothing about it has to survive meta-device loading or pruning.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``distances [klen]`` (float) -> ``[klen, dim]`` (``[sin | cos]``), computed in float32."""
        steps = torch.arange(0.0, self.dim, 2.0, device=distances.device, dtype=torch.float32)
        inv_freq = 1 / (10000 ** (steps / self.dim))
        angles = torch.outer(distances.float(), inv_freq)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TransfoXLAdaptiveEmbedding(nn.Module):
    """Adaptive input embedding (Baevski & Auli): cluster ``i`` has width ``d_embed // div_val**i`` and its own
    projection ``emb_projs[i]`` to ``d_model``; the result is multiplied by ``config.effective_emb_scale``."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.cutoff_ends = [0, *config.cutoffs, config.vocab_size]
        self.div_val = config.div_val
        self.d_proj = config.d_model
        self.scale = config.effective_emb_scale
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if self.div_val == 1:
            self.emb_layers.append(nn.Embedding(config.vocab_size, config.d_embed))
            if config.d_model != config.d_embed:
                self.emb_projs.append(nn.Parameter(torch.empty(config.d_model, config.d_embed)))
        else:
            for i, (lo, hi) in enumerate(zip(self.cutoff_ends[:-1], self.cutoff_ends[1:])):
                width = config.d_embed // self.div_val**i
                self.emb_layers.append(nn.Embedding(hi - lo, width))
                self.emb_projs.append(nn.Parameter(torch.empty(config.d_model, width)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids [...]`` -> ``[..., d_model]``."""
        if self.div_val == 1:
            embed = self.emb_layers[0](input_ids)
            if len(self.emb_projs) > 0:
                embed = F.linear(embed, self.emb_projs[0])
        else:
            weight = self.emb_layers[0].weight
            embed = torch.zeros(*input_ids.shape, self.d_proj, dtype=weight.dtype, device=weight.device)
            for i, (lo, hi) in enumerate(zip(self.cutoff_ends[:-1], self.cutoff_ends[1:])):
                in_cluster = (input_ids >= lo) & (input_ids < hi)
                if not bool(in_cluster.any()):
                    continue
                local = self.emb_layers[i](input_ids[in_cluster] - lo)
                embed[in_cluster] = F.linear(local, self.emb_projs[i])
        return embed * self.scale


class TransfoXLRelativeAttention(nn.Module):
    """Multi-head attention with Transformer-XL relative positions ("relative partial learnable").

    score(i, j) = scale * [(q_i + r_w_bias) . k_j + (q_i + r_r_bias) . r_{dist(i, j)}], scale = 1 / sqrt(d_head).
    Does its own residual connection and LayerNorm (pre- or post-norm). ``r_w_bias``/``r_r_bias`` live here when
    ``config.untie_r``; otherwise the model owns one shared pair and passes it to `forward`.
    """

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.n_head = config.n_head
        self.d_head = config.d_head
        self.pre_lnorm = config.pre_lnorm
        inner = config.n_head * config.d_head
        self.qkv_net = nn.Linear(config.d_model, 3 * inner, bias=False)
        self.r_net = nn.Linear(config.effective_d_pos_emb, inner, bias=False)
        self.o_net = nn.Linear(inner, config.d_model, bias=False)
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.drop = nn.Dropout(config.dropout)
        self.dropatt = nn.Dropout(config.dropatt)
        if config.untie_r:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
        else:
            self.r_w_bias = None
            self.r_r_bias = None

    @property
    def scale(self) -> float:
        """Attention scale, a function of ``d_head`` only (as in 4.x)."""
        return 1 / (self.d_head**0.5)

    @staticmethod
    def _rel_shift(scores: torch.Tensor) -> torch.Tensor:
        """Turn ``[..., q, k]`` scores against position *index* into scores against relative *distance*.

        Column c of the input holds the score against distance ``klen - 1 - c``; afterwards entry (i, j) holds the
        score against distance ``mlen + i - j``. Entries with j > mlen + i are garbage and must be masked.
        """
        *lead, qlen, klen = scores.shape
        padded = F.pad(scores, (1, 0))
        padded = padded.view(*lead, klen + 1, qlen)
        return padded[..., 1:, :].reshape(*lead, qlen, klen)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, s, n_head * d]`` -> ``[b, n_head, s, d]``."""
        return x.reshape(x.shape[0], x.shape[1], self.n_head, -1).transpose(1, 2)

    def forward(
        self,
        hidden: torch.Tensor,
        pos_emb: torch.Tensor,
        attn_mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        r_w_bias: torch.Tensor | None = None,
        r_r_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention half of a layer, residual + LayerNorm included.

        Args:
            hidden: ``[b, qlen, d_model]`` layer input.
            pos_emb: ``[1, klen, d_pos_emb]`` (or ``[b, klen, d_pos_emb]``) from `TransfoXLModel.relative_positions`.
            attn_mask: ``[qlen, klen]`` bool, True where attention is forbidden.
            memory: ``[b, mlen, d_model]`` past inputs of this layer (batch-first), or None.
            r_w_bias, r_r_bias: ``[n_head, d_head]`` shared biases (required iff ``untie_r`` is False).

        Returns:
            ``([b, qlen, d_model], probs [b, n_head, qlen, klen] or None)``.
        """
        qlen = hidden.shape[1]
        seq = hidden if memory is None else torch.cat([memory, hidden], dim=1)
        if self.pre_lnorm:
            seq = self.layer_norm(seq)
        query, key, value = self.qkv_net(seq).chunk(3, dim=-1)
        query = self._split_heads(query[:, -qlen:])
        key = self._split_heads(key)
        value = self._split_heads(value)
        rel_key = self._split_heads(self.r_net(pos_emb))

        r_w_bias = self.r_w_bias if r_w_bias is None else r_w_bias
        r_r_bias = self.r_r_bias if r_r_bias is None else r_r_bias
        if r_w_bias is None or r_r_bias is None:
            raise ValueError("TransfoXLRelativeAttention: shared r_w_bias/r_r_bias are required when untie_r=False.")
        content = torch.matmul(query + r_w_bias.unsqueeze(1), key.transpose(-1, -2))
        position = self._rel_shift(torch.matmul(query + r_r_bias.unsqueeze(1), rel_key.transpose(-1, -2)))
        scores = (content + position) * self.scale
        scores = scores.masked_fill(attn_mask, torch.finfo(scores.dtype).min)
        probs = self.dropatt(torch.softmax(scores, dim=-1))

        context = torch.matmul(probs, value).transpose(1, 2)
        context = context.reshape(context.shape[0], qlen, -1)
        out = self.drop(self.o_net(context))
        out = hidden + out if self.pre_lnorm else self.layer_norm(hidden + out)
        return out, (probs if output_attentions else None)


class TransfoXLFeedForward(nn.Module):
    """Position-wise feed-forward half of a layer, residual + LayerNorm included.

    ``CoreNet`` keeps the 4.x indices (0: Linear, 1: ReLU, 2: Dropout, 3: Linear, 4: Dropout). The ReLU is not
    in-place, so forward hooks may keep or replace the output of ``CoreNet.0``.
    """

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.pre_lnorm = config.pre_lnorm
        self.CoreNet = nn.Sequential(
            nn.Linear(config.d_model, config.d_inner),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.d_inner, config.d_model),
            nn.Dropout(config.dropout),
        )
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[b, q, d_model]`` -> ``[b, q, d_model]``."""
        if self.pre_lnorm:
            return hidden + self.CoreNet(self.layer_norm(hidden))
        return self.layer_norm(hidden + self.CoreNet(hidden))


class TransfoXLDecoderLayer(nn.Module):
    """One Transformer-XL layer: ``dec_attn`` (attention half) then ``pos_ff`` (feed-forward half)."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.dec_attn = TransfoXLRelativeAttention(config)
        self.pos_ff = TransfoXLFeedForward(config)

    def forward(
        self,
        hidden: torch.Tensor,
        pos_emb: torch.Tensor,
        attn_mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        r_w_bias: torch.Tensor | None = None,
        r_r_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Arguments as `TransfoXLRelativeAttention.forward`."""
        hidden, probs = self.dec_attn(hidden, pos_emb, attn_mask, memory, r_w_bias, r_r_bias, output_attentions)
        return self.pos_ff(hidden), probs


class TransfoXLAdaptiveLogSoftmax(nn.Module):
    """Projected adaptive log-softmax (the 4.x ``crit``).

    The head cluster scores the ``cutoffs[0]`` frequent tokens plus one logit per tail cluster; tail cluster ``i``
    adds its own log-softmax to the head's cluster log-probability. With ``div_val == 1`` all clusters slice one
    output layer; otherwise cluster ``i`` has width ``d_embed // div_val**i``. ``out_projs[i]`` maps ``d_model`` to the
    cluster width (``None`` when ``div_val == 1`` and ``d_model == d_embed``).
    """

    def __init__(self, config: TransfoXLConfig):
        super().__init__()
        self.cutoff_ends = [0, *config.cutoffs, config.vocab_size]
        self.n_clusters = len(config.cutoffs)
        self.shortlist_size = self.cutoff_ends[1]
        self.div_val = config.div_val
        if self.n_clusters > 0:
            self.cluster_weight = nn.Parameter(torch.empty(self.n_clusters, config.d_embed))
            self.cluster_bias = nn.Parameter(torch.empty(self.n_clusters))
        self.out_layers = nn.ModuleList()
        self.out_projs = nn.ParameterList()
        if self.div_val == 1:
            for _ in range(self.n_clusters + 1):
                needs_proj = config.d_model != config.d_embed
                self.out_projs.append(
                    nn.Parameter(torch.empty(config.d_model, config.d_embed)) if needs_proj else None
                )
            self.out_layers.append(nn.Linear(config.d_embed, config.vocab_size))
        else:
            for i, (lo, hi) in enumerate(zip(self.cutoff_ends[:-1], self.cutoff_ends[1:])):
                width = config.d_embed // self.div_val**i
                self.out_projs.append(nn.Parameter(torch.empty(config.d_model, width)))
                self.out_layers.append(nn.Linear(width, hi - lo))

    def _cluster(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Weight, bias and projection scoring cluster ``i`` (the head gets the cluster logits appended)."""
        if self.div_val == 1:
            lo, hi = self.cutoff_ends[i], self.cutoff_ends[i + 1]
            weight = self.out_layers[0].weight[lo:hi]
            bias = self.out_layers[0].bias[lo:hi]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.n_clusters > 0:
            weight = torch.cat([weight, self.cluster_weight], dim=0)
            bias = torch.cat([bias, self.cluster_bias], dim=0)
        return weight, bias, self.out_projs[i]

    def _cluster_log_softmax(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        weight, bias, proj = self._cluster(i)
        if proj is not None:
            hidden = F.linear(hidden, proj.t())
        return torch.log_softmax(F.linear(hidden, weight, bias), dim=-1)

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., d_model]`` -> ``[..., vocab_size]`` log-probabilities."""
        head = self._cluster_log_softmax(hidden, 0)
        if self.n_clusters == 0:
            return head
        parts = [head[..., : self.shortlist_size]]
        for i in range(1, self.n_clusters + 1):
            cluster = self.shortlist_size + i - 1
            parts.append(head[..., cluster : cluster + 1] + self._cluster_log_softmax(hidden, i))
        return torch.cat(parts, dim=-1)

    def nll(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``target [N]`` under ``hidden [N, d_model]``, in order; 0 where target is -100.

        Tail clusters are evaluated only on the rows whose target falls in them (no full-vocabulary tensor).
        """
        out = hidden.new_zeros(target.shape)
        head = self._cluster_log_softmax(hidden, 0)
        for i, (lo, hi) in enumerate(zip(self.cutoff_ends[:-1], self.cutoff_ends[1:])):
            rows = ((target >= lo) & (target < hi)).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            local = (target[rows] - lo).unsqueeze(1)
            if i == 0:
                logprob = head[rows].gather(1, local).squeeze(1)
            else:
                tail = self._cluster_log_softmax(hidden[rows], i)
                logprob = head[rows, self.shortlist_size + i - 1] + tail.gather(1, local).squeeze(1)
            out[rows] = -logprob
        return out


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


class TransfoXLPreTrainedModel(PreTrainedModel):
    """Weight initialization (the 4.x scheme) and loading rules shared by the Transformer-XL models."""

    config_class = TransfoXLConfig
    config: TransfoXLConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["TransfoXLDecoderLayer"]
    # 4.x stored the sinusoid frequencies, and with untie_r=False also a per-layer alias of the shared r biases.
    _keys_to_ignore_on_load_unexpected = [r"pos_emb\.inv_freq", r"layers\.\d+\.dec_attn\.r_[rw]_bias"]

    def _init_matrix(self, weight: torch.Tensor) -> None:
        if self.config.init == "uniform":
            init.uniform_(weight, -self.config.init_range, self.config.init_range)
        else:
            init.normal_(weight, 0.0, self.config.init_std)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """4.x initialization: normal/uniform matrices, zero biases, LayerNorm weights ~ N(1, init_std)."""
        cfg = self.config
        if isinstance(module, nn.Linear):
            self._init_matrix(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            self._init_matrix(module.weight)
        elif isinstance(module, nn.LayerNorm):
            init.normal_(module.weight, 1.0, cfg.init_std)
            init.zeros_(module.bias)
        elif isinstance(module, nn.ParameterList):
            # the embedding and softmax projections; initialized through their own list module because
            # transformers skips `_init_weights` for custom-code modules without direct parameters
            for proj in module:
                if proj is not None:
                    init.normal_(proj, 0.0, cfg.proj_init_std)
        elif isinstance(module, TransfoXLAdaptiveLogSoftmax):
            if module.n_clusters > 0:
                self._init_matrix(module.cluster_weight)
                init.zeros_(module.cluster_bias)
        elif isinstance(module, (TransfoXLRelativeAttention, TransfoXLModel)):
            if getattr(module, "r_w_bias", None) is not None:
                self._init_matrix(module.r_w_bias)
                self._init_matrix(module.r_r_bias)


class TransfoXLModel(TransfoXLPreTrainedModel):
    """The Transformer-XL decoder stack (no output head). See the module docstring for the piecewise API."""

    def __init__(self, config: TransfoXLConfig):
        super().__init__(config)
        config._check_supported()
        self.word_emb = TransfoXLAdaptiveEmbedding(config)
        self.drop = nn.Dropout(config.dropout)
        if not config.untie_r:
            self.r_w_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
            self.r_r_bias = nn.Parameter(torch.empty(config.n_head, config.d_head))
        self.layers = nn.ModuleList(TransfoXLDecoderLayer(config) for _ in range(config.n_layer))
        self.pos_emb = TransfoXLPositionalEmbedding(config.effective_d_pos_emb)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.word_emb

    def set_input_embeddings(self, new_embeddings: nn.Module) -> None:
        self.word_emb = new_embeddings

    def reset_memory_length(self, mem_len: int) -> None:
        """Change how many past states are kept (4.x API); stored in the config."""
        self.config.mem_len = mem_len

    # -- pieces ----------------------------------------------------------------------------------------------------

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """``input_ids [b, q]`` -> word embeddings ``[b, q, d_model]``: projected and scaled, before dropout."""
        return self.word_emb(input_ids)

    def relative_positions(
        self,
        qlen: int,
        mlen: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Relative position embedding and attention mask for ``qlen`` new tokens after ``mlen`` memory slots.

        Returns ``pos_emb [1, klen, d_pos_emb]`` (distances ``klen-1 .. 0``, clamped at ``clamp_len``) and
        ``attn_mask [qlen, klen]`` (bool, True = masked: the future, and with ``same_length`` also keys beyond the
        last ``mem_len + 1`` positions of each query), ``klen = mlen + qlen``. Dropout is not applied here.
        """
        cfg = self.config
        if device is None or dtype is None:
            param = self.word_emb.emb_layers[0].weight
            device = param.device if device is None else device
            dtype = param.dtype if dtype is None else dtype
        klen = mlen + qlen
        distances = torch.arange(klen - 1, -1, -1.0, device=device, dtype=torch.float32)
        if cfg.clamp_len > 0:
            distances = distances.clamp(max=cfg.clamp_len)
        pos_emb = self.pos_emb(distances).to(dtype).unsqueeze(0)

        ones = torch.ones(qlen, klen, dtype=torch.bool, device=device)
        attn_mask = torch.triu(ones, diagonal=1 + mlen)
        if cfg.same_length:
            overflow = klen - cfg.mem_len
            shift = qlen - overflow if overflow > 0 else qlen
            attn_mask = attn_mask | torch.tril(ones, diagonal=-shift)
        return pos_emb, attn_mask

    def shared_r_biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(r_w_bias, r_r_bias)`` shared by all layers when ``untie_r`` is False, else ``(None, None)``."""
        if self.config.untie_r:
            return None, None
        return self.r_w_bias, self.r_r_bias

    def run_attention(
        self,
        index: int,
        hidden: torch.Tensor,
        pos_emb: torch.Tensor,
        attn_mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention half of layer ``index`` (``layers[index].dec_attn``), residual + LayerNorm included.

        ``memory`` is batch-first ``[b, mlen, d_model]``. Returns ``(hidden, probs or None)``.
        """
        r_w_bias, r_r_bias = self.shared_r_biases()
        return self.layers[index].dec_attn(
            hidden, pos_emb, attn_mask, memory, r_w_bias, r_r_bias, output_attentions
        )

    def run_feed_forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """Feed-forward half of layer ``index`` (``layers[index].pos_ff``), residual + LayerNorm included."""
        return self.layers[index].pos_ff(hidden)

    def run_layer(
        self,
        index: int,
        hidden: torch.Tensor,
        pos_emb: torch.Tensor,
        attn_mask: torch.Tensor,
        memory: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Whole layer ``index``: `run_attention` then `run_feed_forward`. Returns ``(hidden, probs or None)``."""
        hidden, probs = self.run_attention(index, hidden, pos_emb, attn_mask, memory, output_attentions)
        return self.run_feed_forward(index, hidden), probs

    def init_mems(self, batch_size: int) -> list[torch.Tensor] | None:
        """Zero memories ``[mem_len, b, d_model]`` per layer (what 4.x uses when no ``mems`` are given)."""
        if self.config.mem_len <= 0:
            return None
        param = self.word_emb.emb_layers[0].weight
        shape = (self.config.mem_len, batch_size, self.config.d_model)
        return [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in range(len(self.layers))]

    def update_mems(
        self,
        layer_inputs: list[torch.Tensor],
        mems: list[torch.Tensor] | None,
        mlen: int,
        qlen: int,
    ) -> list[torch.Tensor] | None:
        """New memories: the last ``mem_len`` of (old memory, this segment's layer inputs), 4.x layout, detached."""
        if mems is None:
            return None
        end = mlen + qlen
        begin = max(0, end - self.config.mem_len)
        with torch.no_grad():
            return [
                torch.cat([mem, inp.transpose(0, 1)], dim=0)[begin:end].detach()
                for mem, inp in zip(mems, layer_inputs)
            ]

    # -- full forward ----------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        mems: list[torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TransfoXLModelOutput | tuple:
        """Run the decoder on ``input_ids [b, q]`` (or ``inputs_embeds [b, q, d_model]``, used as is).

        ``mems``: one ``[mlen, b, d_model]`` tensor per layer from a previous call; ``None`` starts from
        ``mem_len`` zero slots (as 4.x). ``attention_mask`` is accepted for API compatibility only: Transformer-XL
        has no padding mask, so anything but all ones raises. Other keyword arguments are ignored.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("TransfoXLModel: pass exactly one of input_ids and inputs_embeds.")
        _check_no_padding(attention_mask)

        hidden = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        bsz, qlen = hidden.shape[:2]
        if mems is None:
            mems = self.init_mems(bsz)
        elif len(mems) != len(self.layers):
            raise ValueError(f"TransfoXLModel: expected {len(self.layers)} mems, got {len(mems)}.")
        mlen = 0 if mems is None else mems[0].shape[0]
        pos_emb, attn_mask = self.relative_positions(qlen, mlen, hidden.device, hidden.dtype)

        hidden = self.drop(hidden)
        pos_emb = self.drop(pos_emb)
        layer_inputs: list[torch.Tensor] = []
        attentions: list[torch.Tensor] = []
        for i in range(len(self.layers)):
            layer_inputs.append(hidden)
            memory = None if mems is None else mems[i].transpose(0, 1)
            hidden, probs = self.run_layer(i, hidden, pos_emb, attn_mask, memory, output_attentions)
            if output_attentions:
                attentions.append(probs)
        hidden = self.drop(hidden)
        new_mems = self.update_mems(layer_inputs, mems, mlen, qlen)

        output = TransfoXLModelOutput(
            last_hidden_state=hidden,
            mems=new_mems,
            hidden_states=tuple(layer_inputs) + (hidden,) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class TransfoXLLMHeadModel(TransfoXLPreTrainedModel, GenerationMixin):
    """Transformer-XL with its adaptive-softmax head (``crit``). Outputs log-probabilities (as ``logits`` and as the
    4.x ``prediction_scores``); with ``labels`` also per-token ``losses`` and their mean ``loss``."""

    # Regex patterns of tie targets: `save_pretrained` uses the keys to decide which aliases to drop. The exact
    # pairs depend on the config (`tie_word_embeddings`, `tie_projs`) and come from `get_expanded_tied_weights_keys`.
    _tied_weights_keys = {
        r"crit\.out_layers\.\d+\.weight": r"transformer\.word_emb\.emb_layers\.\d+\.weight",
        r"crit\.out_projs\.\d+": r"transformer\.word_emb\.emb_projs\.\d+",
    }
    # Memories cannot be rolled back, so assisted decoding must not be used.
    _is_stateful = True

    def __init__(self, config: TransfoXLConfig):
        super().__init__(config)
        self.transformer = TransfoXLModel(config)
        self.crit = TransfoXLAdaptiveLogSoftmax(config)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The cache is the list of `mems`, carried by the generation methods at the end of this class.
        return False

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict[str, str]:
        """``{target: source}`` ties with the 4.x ``tie_weights`` semantics.

        ``tie_word_embeddings`` ties every ``crit.out_layers.i.weight`` to ``word_emb.emb_layers.i.weight``;
        ``tie_projs[i]`` (independently of it) ties ``crit.out_projs.i`` to ``word_emb.emb_projs.i`` (to
        ``emb_projs.0`` when ``div_val == 1``, and only if that projection exists).
        """
        if all_submodels:
            return super().get_expanded_tied_weights_keys(all_submodels=True)
        cfg = self.config
        ties: dict[str, str] = {}
        if cfg.tie_word_embeddings:
            for i in range(len(self.crit.out_layers)):
                ties[f"crit.out_layers.{i}.weight"] = f"transformer.word_emb.emb_layers.{i}.weight"
        for i, tie in enumerate(cfg.tie_projs):
            if not tie:
                continue
            if cfg.div_val == 1 and cfg.d_model != cfg.d_embed:
                ties[f"crit.out_projs.{i}"] = "transformer.word_emb.emb_projs.0"
            elif cfg.div_val != 1:
                ties[f"crit.out_projs.{i}"] = f"transformer.word_emb.emb_projs.{i}"
        return ties

    def get_output_embeddings(self) -> None:
        # The adaptive softmax has no single output matrix; ties are declared in `get_expanded_tied_weights_keys`.
        return None

    def resize_token_embeddings(self, *args, **kwargs):
        raise NotImplementedError("TransfoXLLMHeadModel: resizing the adaptive embedding/softmax is not supported.")

    def reset_memory_length(self, mem_len: int) -> None:
        self.transformer.reset_memory_length(mem_len)

    def init_mems(self, batch_size: int) -> list[torch.Tensor] | None:
        return self.transformer.init_mems(batch_size)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Head piece: ``[b, q, d_model]`` final hidden states -> ``[b, q, vocab_size]`` log-probabilities."""
        return self.crit.log_prob(hidden)

    def token_losses(self, hidden: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """``[b, q-1]`` NLL of ``labels[:, 1:]`` given ``hidden[:, :-1]`` (labels are shifted here); 0 at -100."""
        shifted_hidden = hidden[:, :-1]
        shifted_labels = labels[:, 1:].to(hidden.device)
        flat = self.crit.nll(shifted_hidden.reshape(-1, shifted_hidden.shape[-1]), shifted_labels.reshape(-1))
        return flat.view(shifted_labels.shape)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        mems: list[torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TransfoXLLMHeadModelOutput | tuple:
        """Language-model forward.

        Args:
            labels: ``[b, q]`` token ids, shifted inside (``labels = input_ids`` is right); -100 is ignored.
            logits_to_keep: 0 scores every position; ``n > 0`` only the last ``n``; a tensor selects positions.
                Losses always use every position.
            kwargs: ``num_items_in_batch`` (from `Trainer`) replaces the token count in the mean; others ignored.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        base = self.transformer(
            input_ids=input_ids,
            mems=mems,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = base.last_hidden_state
        if isinstance(logits_to_keep, int):
            kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            kept = hidden[:, logits_to_keep]
        scores = self.log_probs(kept)

        loss = losses = None
        if labels is not None:
            losses = self.token_losses(hidden, labels)
            num_items = kwargs.get("num_items_in_batch")
            if num_items is None:
                num_items = (labels[:, 1:] != -100).sum().clamp(min=1)
            loss = losses.sum() / num_items

        output = TransfoXLLMHeadModelOutput(
            loss=loss,
            logits=scores,
            mems=base.mems,
            hidden_states=base.hidden_states,
            attentions=base.attentions,
            losses=losses,
            prediction_scores=scores,
        )
        return output if return_dict else output.to_tuple()

    # -- generation ------------------------------------------------------------------------------------------------
    # `generate` keeps the running memories in ``model_kwargs["mems"]`` (a cache name `GenerationMixin` knows: beam
    # search reorders it through `_reorder_cache` and ``return_dict_in_generate`` returns it as ``cache``). The first
    # forward reads the whole prompt (continuing from ``mems`` passed to `generate`, if any); every later one feeds
    # only the new token with the memories of the previous step, exactly as a manual loop over `forward` does.

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        mems: list[torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """Inputs of one generation step: the new token(s) with the running memories once there are memories.

        With ``use_cache=False`` (or ``mem_len == 0``) every step re-reads the whole sequence from empty memories.
        """
        mems = None if use_cache is False else mems
        model_inputs: dict = {"mems": mems}
        if inputs_embeds is not None and is_first_iteration:
            model_inputs["inputs_embeds"] = inputs_embeds
        elif mems is not None and not is_first_iteration:
            model_inputs["input_ids"] = input_ids[:, -(next_sequence_length or 1) :]
        else:
            model_inputs["input_ids"] = input_ids
        if attention_mask is not None:
            model_inputs["attention_mask"] = attention_mask
        for key in ("logits_to_keep", "output_attentions", "output_hidden_states"):
            if kwargs.get(key) is not None:
                model_inputs[key] = kwargs[key]
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs: ModelOutput, model_kwargs: dict, *args, **kwargs) -> dict:
        """Carry this step's memories to the next one (the base class only carries a `Cache` named ``cache``)."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if model_kwargs.get("use_cache") is not False:
            model_kwargs["mems"] = outputs.mems
        return model_kwargs

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids: torch.LongTensor | None = None,
        **model_kwargs,
    ) -> tuple[torch.LongTensor | None, dict]:
        """Beams / several return sequences: repeat prompt memories along their batch axis (dim 1) like the ids."""
        mems = model_kwargs.pop("mems", None)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        if mems is not None:
            model_kwargs["mems"] = [mem.repeat_interleave(expand_size, dim=1) for mem in mems]
        return input_ids, model_kwargs

    @staticmethod
    def _reorder_cache(mems: list[torch.Tensor] | None, beam_idx: torch.Tensor) -> list[torch.Tensor] | None:
        """Beam search: reorder the batch axis (dim 1) of every memory."""
        if mems is None:
            return None
        return [mem.index_select(1, beam_idx.to(mem.device)) for mem in mems]


def _check_no_padding(attention_mask: torch.Tensor | None) -> None:
    """Transformer-XL (like 4.x) has no padding mask; refuse a mask that would be silently ignored."""
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        raise ValueError(
            "Transformer-XL has no padding mask: attention_mask must be all ones (batch sequences of equal length)."
        )


TransfoXLModel.register_for_auto_class("AutoModel")
TransfoXLLMHeadModel.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "TransfoXLLMHeadModel",
    "TransfoXLLMHeadModelOutput",
    "TransfoXLModel",
    "TransfoXLModelOutput",
    "TransfoXLPreTrainedModel",
]
