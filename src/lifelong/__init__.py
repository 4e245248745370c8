"""lifelong: continual (lifelong) learning of language models, measured in one results matrix."""

__version__ = "0.1.0"
