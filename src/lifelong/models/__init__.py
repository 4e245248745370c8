"""Model loading and per-architecture module maps."""

from lifelong.models.loading import load_model_and_tokenizer

__all__ = ["load_model_and_tokenizer"]
