"""Distillation recipes (HfArgumentParser scripts as functions), shared by `examples/` and `upvit distill`."""
