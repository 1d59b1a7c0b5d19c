"""upvit-hf: UP-ViTs structured pruning for Hugging Face transformers."""
