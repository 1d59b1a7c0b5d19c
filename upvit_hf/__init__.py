"""upvit-hf: UP-ViTs structured pruning (Yu & Wu) for Hugging Face transformers."""

__version__ = "0.1.0"

from . import models  # noqa: E402,F401  (registers Transformer-XL with the Auto classes)
from .distillation import DistillationTrainer  # noqa: E402
from .pruner import UPPruner  # noqa: E402
from .scores import BlockScores, ImportanceScores  # noqa: E402
from .targets import PruningTarget  # noqa: E402

__all__ = ["BlockScores", "DistillationTrainer", "ImportanceScores", "PruningTarget", "UPPruner", "__version__"]
