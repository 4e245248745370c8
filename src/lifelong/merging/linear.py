"""Linear merge: the weighted average of the models (a uniform model soup, Wortsman et al. 2022, when
the weights are equal)."""

from __future__ import annotations

from typing import Optional

import torch

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext, zero_sum


class LinearParams(Strict):
    normalize: bool = True
    """Divide by the sum of the weights (a true average)."""


@MERGE_METHODS.register("linear")
class Linear(MergeMethod):
    """sum_i w_i theta_i (/ sum_i w_i)."""

    Params = LinearParams

    def check_weights(self, weights: list[float]) -> Optional[str]:
        return zero_sum(weights) if self.params.normalize else None  # type: ignore[attr-defined]

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        out: torch.Tensor = sum(w * t for w, t in zip(weights, tensors))  # type: ignore[assignment]
        if self.params.normalize:  # type: ignore[attr-defined]
            out = out / sum(weights)
        return out  # type: ignore[return-value]
