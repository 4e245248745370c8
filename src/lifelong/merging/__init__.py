"""Model merging: one file per method, each a pure function over tensors, and a lazy safetensors driver
(`engine.merge_models`) that streams one tensor per input at a time."""

from lifelong.merging.base import MergeMethod
from lifelong.registry import Registry, import_siblings

MERGE_METHODS: Registry[type[MergeMethod]] = Registry("merge method")

import_siblings(__name__, __path__)

__all__ = ["MERGE_METHODS", "MergeMethod"]
