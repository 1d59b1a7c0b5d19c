"""How channels are scored: exact KL importance (the paper's), its Fisher estimate, exact refinement near the
cut, and naive baselines."""

from .baselines import magnitude_scores, random_scores
from .exact import COMPONENTS, ChannelSubset, ExactKLScorer
from .fisher import DEFAULT_LABELS_PER_INPUT, FisherScorer
from .refine import refine_scores

METHODS = ("kl", "fisher", "hybrid", "magnitude", "random")

__all__ = ["COMPONENTS", "DEFAULT_LABELS_PER_INPUT", "METHODS", "ChannelSubset", "ExactKLScorer", "FisherScorer", "magnitude_scores",
           "random_scores", "refine_scores"]
