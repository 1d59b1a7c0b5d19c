"""How channels are scored: exact KL importance (the paper's) and naive baselines."""

from .baselines import magnitude_scores, random_scores
from .exact import ExactKLScorer

METHODS = ("kl", "magnitude", "random")

__all__ = ["METHODS", "ExactKLScorer", "magnitude_scores", "random_scores"]
