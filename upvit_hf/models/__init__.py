"""Model code owned by upvit-hf. Importing it registers the models with the transformers Auto classes."""

from .transfo_xl import TransfoXLConfig, TransfoXLLMHeadModel, TransfoXLModel

__all__ = ["TransfoXLConfig", "TransfoXLLMHeadModel", "TransfoXLModel"]
