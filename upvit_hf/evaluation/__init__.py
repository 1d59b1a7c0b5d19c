"""Evaluation of (pruned) models: accuracy, perplexity, throughput, parameter and FLOP counts."""

from .accuracy import evaluate_accuracy, resolve_image_processor
from .complexity import count_flops, count_parameters, describe_inputs, dummy_inputs, max_positions, model_stats
from .data import (
    DEFAULT_IMAGE_DATASET,
    DEFAULT_TEXT_CONFIG,
    DEFAULT_TEXT_DATASET,
    check_columns,
    convert_images,
    load_image_dataset,
    load_source,
    load_split,
    load_text,
    text_documents,
)
from .metrics import Perplexity, TopKAccuracy
from .perplexity import (
    PerplexityResult,
    Window,
    evaluate_perplexity,
    line_stream,
    mems_perplexity,
    sliding_window_perplexity,
    sliding_windows,
)
from .throughput import ThroughputResult, image_throughput, measure_throughput, token_throughput

__all__ = [
    "DEFAULT_IMAGE_DATASET",
    "DEFAULT_TEXT_CONFIG",
    "DEFAULT_TEXT_DATASET",
    "Perplexity",
    "PerplexityResult",
    "ThroughputResult",
    "TopKAccuracy",
    "Window",
    "check_columns",
    "convert_images",
    "count_flops",
    "count_parameters",
    "describe_inputs",
    "dummy_inputs",
    "evaluate_accuracy",
    "evaluate_perplexity",
    "image_throughput",
    "load_image_dataset",
    "load_source",
    "load_split",
    "load_text",
    "max_positions",
    "measure_throughput",
    "line_stream",
    "mems_perplexity",
    "model_stats",
    "resolve_image_processor",
    "sliding_window_perplexity",
    "sliding_windows",
    "text_documents",
    "token_throughput",
]
