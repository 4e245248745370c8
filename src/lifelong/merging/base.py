"""The merge-method interface: a pure function of the same-named tensor of every input model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from pydantic import BaseModel

from lifelong.config import Strict


class NoParams(Strict):
    """A method without parameters."""


@dataclass
class TensorContext:
    name: str
    """The tensor's name (DARE seeds its masks from it, so the order of tensors does not matter)."""
    seed: int = 0
    threshold: Optional[list[float]] = None
    """Per-model magnitude thresholds computed over all tensors (TIES with global trim)."""


class MergeMethod:
    Params: ClassVar[type[BaseModel]] = NoParams
    uses_base: ClassVar[bool] = False
    """Works on deltas against a base model (the YAML's `base_model` is required)."""
    n_models: ClassVar[Optional[int]] = None
    """Exact number of input models the method takes (None: any)."""

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        self.params = params if params is not None else self.Params()

    def merge(self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor],
              ctx: TensorContext) -> torch.Tensor:
        """Merged tensor (float32 in, float32 out; the driver casts to the output dtype)."""
        raise NotImplementedError

    def global_fraction(self) -> Optional[float]:
        """If set, the driver first computes, per model, the magnitude threshold keeping this fraction of
        all delta entries over every tensor, and passes it in `ctx.threshold`."""
        return None
