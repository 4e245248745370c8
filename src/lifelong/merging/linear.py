"""Linear merge: the weighted average of the models (Wortsman et al. 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference time", arXiv:2203.05482; a uniform
soup when the weights are equal):

    theta = sum_i w_i theta_i / sum_i w_i        (normalize: true, the default)
    theta = sum_i w_i theta_i                    (normalize: false)

mergekit 0.1.5's `linear`: `weight` is per model, `normalize` global (default true); a `base_model` is no
special input to linear and is averaged like any other model (`base_in_models = "input"`). The sum is
accumulated in float32 in model order starting from zeros and divided once by the float32 sum of the weights,
as mergekit does, so outputs equal mergekit's bit for bit on float32 inputs. Unlike mergekit, weights summing
to zero with `normalize: true` are refused before any tensor is read (mergekit writes inf/NaN)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

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
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0}
    base_in_models: ClassVar[Literal["base", "input"]] = "input"

    def check_weights(self, weights: list[float]) -> Optional[str]:
        return zero_sum(weights) if self.params.normalize else None  # type: ignore[attr-defined]

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        w = torch.tensor(weights, dtype=torch.float32)
        out = torch.zeros_like(tensors[0], dtype=torch.float32)
        for x, c in zip(tensors, w.unbind(0)):
            out.addcmul_(x, c)
        if self.params.normalize:  # type: ignore[attr-defined]
            out.div_(w.sum())
        return out
