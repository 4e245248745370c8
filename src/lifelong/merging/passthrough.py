"""Passthrough: copy one model's tensor unchanged, optionally scaled (mergekit's `passthrough`).

With `slices:` it assembles a model from layer ranges of other models: frankenmerges (layers of different
models stacked) and depth up-scaling (SOLAR, Kim et al. 2023, "SOLAR 10.7B: Scaling Large Language Models
with Simple yet Effective Depth Up-Scaling", arXiv:2312.15166: layers [0, 24) and [8, 32) of one 32-layer
model stacked into 48). Each slice has exactly one source; the engine renumbers the layers and sets the
output's layer count. `scale` (per model, default none) multiplies the tensor, as mergekit's does (e.g.
`scale: [{filter: o_proj, value: 0}]` zeroes a layer's output projections).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


@MERGE_METHODS.register("passthrough")
class Passthrough(MergeMethod):
    """The single input's tensor (times `scale` when given)."""

    n_models = 1
    base_in_models = "input"
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "scale": None}

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        scale = ctx.model_param(0, "scale", None)
        return tensors[0] if scale is None else tensors[0] * float(scale)
