"""Transformer-XL for transformers 5 (removed from the library in v5), registered with the Auto classes.

Importing this package registers ``model_type="transfo-xl"`` with `AutoConfig`, `TransfoXLModel` with `AutoModel`
and `TransfoXLLMHeadModel` with `AutoModelForCausalLM`, so 4.x checkpoints load with
``AutoModelForCausalLM.from_pretrained``. Their ``vocab.pkl`` becomes a stock fast tokenizer with `convert_vocab`
(see `tokenization_transfo_xl`).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from .configuration_transfo_xl import TransfoXLConfig
from .modeling_transfo_xl import (
    TransfoXLLMHeadModel,
    TransfoXLLMHeadModelOutput,
    TransfoXLModel,
    TransfoXLModelOutput,
    TransfoXLPreTrainedModel,
)
from .tokenization_transfo_xl import build_tokenizer, convert_vocab, load_vocab_pickle, moses_pretokenize


def register_auto_classes() -> None:
    """Register the Transformer-XL classes with the Auto factories (idempotent).

    transformers 5.x has no ``transfo-xl`` entry. Should a release list it again (it sat among the deprecated
    models in late 4.x), our registration takes precedence: `AutoConfig` consults registered configs first, and the
    model mappings are keyed by our config class.
    """
    AutoConfig.register(
        TransfoXLConfig.model_type, TransfoXLConfig, exist_ok=TransfoXLConfig.model_type in CONFIG_MAPPING_NAMES
    )
    AutoModel.register(TransfoXLConfig, TransfoXLModel, exist_ok=True)
    AutoModelForCausalLM.register(TransfoXLConfig, TransfoXLLMHeadModel, exist_ok=True)


register_auto_classes()

__all__ = [
    "TransfoXLConfig",
    "TransfoXLLMHeadModel",
    "TransfoXLLMHeadModelOutput",
    "TransfoXLModel",
    "TransfoXLModelOutput",
    "TransfoXLPreTrainedModel",
    "build_tokenizer",
    "convert_vocab",
    "load_vocab_pickle",
    "moses_pretokenize",
    "register_auto_classes",
]
