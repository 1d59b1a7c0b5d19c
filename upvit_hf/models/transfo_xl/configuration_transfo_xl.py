"""Transformer-XL configuration for transformers 5.

Transformer-XL (Dai et al., 2019) left transformers in v5. This config reads `config.json` files written by
transformers 4.x (same keys, same defaults, including legacy keys such as ``n_token`` or ``tgt_len``, which are
kept as plain attributes), and adds two keys of our own that pruning needs:

* ``d_pos_emb`` -- width of the sinusoidal relative-position embedding that feeds every ``r_net``. ``None`` means
  ``d_model`` (the 4.x behaviour). Pruning the residual width must not change the positional signal, so a pruned
  model stores the original width here.
* ``emb_scale`` -- factor the adaptive input embedding is multiplied by. ``None`` means ``d_model ** 0.5`` (4.x).
  Embeddings are tied to the output softmax, so the factor cannot be folded into the weights when ``d_model``
  shrinks; a pruned model stores the original factor instead.

The attention scale stays ``1 / sqrt(d_head)`` (4.x); it also multiplies the ``r_w_bias``/``r_r_bias`` terms, so a
change of ``d_head`` can be compensated by rescaling the query rows and both biases.

This file must stay importable on its own (it is copied next to saved checkpoints for ``trust_remote_code``).
"""

from dataclasses import field
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


def _default_cutoffs() -> list[int]:
    return [20000, 40000, 200000]


@strict
class TransfoXLConfig(PreTrainedConfig):
    r"""Configuration of a Transformer-XL language model (defaults: `transfo-xl/transfo-xl-wt103`).

    Args:
        vocab_size (`int`, defaults to 267735): number of tokens (legacy alias ``n_token``).
        cutoffs (`list[int]`, defaults to `[20000, 40000, 200000]`): cluster boundaries of the adaptive input and
            adaptive softmax; token ids in ``[cutoffs[i-1], cutoffs[i])`` form cluster ``i``.
        d_model (`int`, defaults to 1024): width of the residual stream.
        d_embed (`int`, defaults to 1024): width of the head-cluster embeddings (tail cluster ``i`` uses
            ``d_embed // div_val**i``).
        n_head (`int`, defaults to 16): number of attention heads.
        d_head (`int`, defaults to 64): width of one attention head.
        d_inner (`int`, defaults to 4096): hidden width of the feed-forward block.
        div_val (`int`, defaults to 4): divisor of the embedding width from one cluster to the next.
        pre_lnorm (`bool`, defaults to `False`): LayerNorm before (``True``) or after (``False``) each sub-block.
        n_layer (`int`, defaults to 18): number of decoder layers.
        mem_len (`int`, defaults to 1600): number of past hidden states kept as memory per layer.
        clamp_len (`int`, defaults to 1000): relative distances above this share one position embedding
            (``<= 0`` disables clamping).
        same_length (`bool`, defaults to `True`): every query attends to the same number of keys.
        proj_share_all_but_first (`bool`, defaults to `True`): default for ``tie_projs`` when it is not given.
        tie_projs (`list[bool]`, *optional*): per cluster, whether the output projection of the adaptive softmax is
            the input projection of the adaptive embedding. Defaults to
            ``[False] + [proj_share_all_but_first] * len(cutoffs)``.
        attn_type (`int`, defaults to 0): only 0 (relative positional attention) is supported.
        sample_softmax (`int`, defaults to -1): sampled softmax is not supported (must be ``<= 0``).
        adaptive (`bool`, defaults to `True`): kept for compatibility; the model always uses the adaptive softmax.
        dropout (`float`, defaults to 0.1): dropout on embeddings, attention output and feed-forward.
        dropatt (`float`, defaults to 0.0): dropout on attention probabilities.
        untie_r (`bool`, defaults to `True`): one pair of ``r_w_bias``/``r_r_bias`` per layer (``True``) or one
            pair shared by all layers (``False``).
        init (`str`, defaults to `"normal"`): ``"normal"`` (std ``init_std``) or ``"uniform"`` (``init_range``).
        init_range (`float`, defaults to 0.01): range of the uniform initializer.
        proj_init_std (`float`, defaults to 0.01): std of the embedding / softmax projections at init.
        init_std (`float`, defaults to 0.02): std of the normal initializer.
        layer_norm_epsilon (`float`, defaults to 1e-5): LayerNorm epsilon.
        d_pos_emb (`int`, *optional*): width of the sinusoidal position embedding; ``None`` means ``d_model``.
        emb_scale (`float`, *optional*): input-embedding multiplier; ``None`` means ``d_model ** 0.5``.
        eos_token_id (`int`, defaults to 0): end-of-sequence token (``<eos>`` is id 0 in WikiText-103).
        tie_word_embeddings (`bool`, defaults to `True`): the adaptive softmax output layers share the embedding
            matrices.
    """

    model_type: ClassVar[str] = "transfo-xl"
    # `Trainer` drops these from the eval outputs: memories are state, and the other two duplicate `logits`/`loss`.
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["mems", "prediction_scores", "losses"]
    attribute_map: ClassVar[dict[str, str]] = {
        "n_token": "vocab_size",
        "hidden_size": "d_model",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
    }

    vocab_size: int = 267735
    cutoffs: list[int] = field(default_factory=_default_cutoffs)
    d_model: int = 1024
    d_embed: int = 1024
    n_head: int = 16
    d_head: int = 64
    d_inner: int = 4096
    div_val: int = 4
    pre_lnorm: bool = False
    n_layer: int = 18
    mem_len: int = 1600
    clamp_len: int = 1000
    same_length: bool = True
    proj_share_all_but_first: bool = True
    tie_projs: list[bool] | None = None
    attn_type: int = 0
    sample_softmax: int = -1
    adaptive: bool = True
    dropout: float | int = 0.1
    dropatt: float | int = 0.0
    untie_r: bool = True
    init: str = "normal"
    init_range: float | int = 0.01
    proj_init_std: float | int = 0.01
    init_std: float | int = 0.02
    layer_norm_epsilon: float | int = 1e-5
    d_pos_emb: int | None = None
    emb_scale: float | int | None = None
    eos_token_id: int | list[int] | None = 0
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        # 4.x derived `tie_projs` from `proj_share_all_but_first`; saved 4.x configs store `tie_projs` explicitly.
        self.cutoffs = list(self.cutoffs)
        if self.tie_projs is None:
            self.tie_projs = [False] + [bool(self.proj_share_all_but_first)] * len(self.cutoffs)
        else:
            self.tie_projs = list(self.tie_projs)
        super().__post_init__(**kwargs)
        # After the base class: legacy aliases among the kwargs (e.g. `n_token`) are applied there.
        self._check_supported()

    def _check_supported(self) -> None:
        """Raise `ValueError` for settings this implementation (like 4.x) does not provide."""
        if self.attn_type != 0:
            raise ValueError(
                f"TransfoXLConfig: attn_type={self.attn_type} is not supported; only attn_type=0 (relative "
                "positional attention, the one used by all released checkpoints) is implemented."
            )
        if self.sample_softmax > 0:
            raise ValueError(
                f"TransfoXLConfig: sample_softmax={self.sample_softmax} is not supported; use -1 (full adaptive "
                "softmax)."
            )
        if self.init not in ("normal", "uniform"):
            raise ValueError(f"TransfoXLConfig: init must be 'normal' or 'uniform', got {self.init!r}.")
        bounds = [0, *self.cutoffs, self.vocab_size]
        if any(lo >= hi for lo, hi in zip(bounds[:-1], bounds[1:])):
            raise ValueError(
                f"TransfoXLConfig: cutoffs must be strictly increasing and below vocab_size={self.vocab_size}, "
                f"got {self.cutoffs}."
            )
        if len(self.tie_projs) != len(self.cutoffs) + 1:
            raise ValueError(
                f"TransfoXLConfig: tie_projs needs one entry per cluster ({len(self.cutoffs) + 1}), "
                f"got {self.tie_projs}."
            )
        if self.div_val < 1 or self.d_embed // self.div_val ** len(self.cutoffs) < 1:
            raise ValueError(
                f"TransfoXLConfig: div_val={self.div_val} leaves an empty embedding for the last cluster "
                f"(d_embed={self.d_embed}, {len(self.cutoffs)} cutoffs)."
            )

    @property
    def effective_d_pos_emb(self) -> int:
        """Width of the sinusoidal relative-position embedding (``d_pos_emb``, else ``d_model``)."""
        return self.d_model if self.d_pos_emb is None else int(self.d_pos_emb)

    @property
    def effective_emb_scale(self) -> float:
        """Multiplier of the adaptive input embedding (``emb_scale``, else ``d_model ** 0.5``)."""
        return self.d_model**0.5 if self.emb_scale is None else float(self.emb_scale)


TransfoXLConfig.register_for_auto_class()

__all__ = ["TransfoXLConfig"]
