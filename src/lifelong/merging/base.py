"""The merge-method interface: a pure function of the same-named tensor of every input model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from pydantic import BaseModel

from lifelong.config import Strict


class NoParams(Strict):
    """A method without parameters."""


def zero_sum(weights: list[float]) -> Optional[str]:
    """The reason a division by sum(weights) is impossible, or None."""
    if math.isclose(sum(weights), 0.0, abs_tol=1e-12):
        return (
            f"the weights {weights} sum to 0, so their normalised average divides by zero; give weights "
            "with a non-zero sum"
        )
    return None


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

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        """Merged tensor (float32 in, float32 out; the driver casts to the output dtype)."""
        raise NotImplementedError

    def check_weights(self, weights: list[float]) -> Optional[str]:
        """Why these per-model weights cannot be merged (e.g. a normalised average of weights summing to
        zero divides by zero), or None. Checked before any tensor is read."""
        return None

    def global_fraction(self) -> Optional[float]:
        """If set, the driver first computes, per model, the magnitude threshold keeping this fraction of
        all delta entries over every tensor, and passes it in `ctx.threshold`."""
        return None
