"""Task arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic"): add the scaled sum of task
vectors tau_i = theta_i - theta_base to the base: theta = theta_base + lambda * sum_i w_i tau_i."""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class TaskArithmeticParams(Strict):
    lambda_: float = Field(default=1.0, alias="lambda")
    """Scaling of the summed task vectors (`lambda` in the YAML)."""


@MERGE_METHODS.register("task_arithmetic")
class TaskArithmetic(MergeMethod):
    """theta_base + lambda * sum_i w_i (theta_i - theta_base)."""

    Params = TaskArithmeticParams
    uses_base = True

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        assert base is not None
        tau = sum(w * (t - base) for w, t in zip(weights, tensors))
        return base + self.params.lambda_ * tau  # type: ignore[attr-defined]
