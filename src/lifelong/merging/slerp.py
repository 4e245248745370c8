"""SLERP: spherical linear interpolation of two models, per tensor (Shoemake 1985; used for model merging
by mergekit and others). With v0, v1 the flattened tensors and Omega the angle between their directions,

    slerp(t) = sin((1 - t) Omega) / sin(Omega) * v0 + sin(t Omega) / sin(Omega) * v1

and plain linear interpolation when the directions are (nearly) parallel."""

from __future__ import annotations

import math
from typing import Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class SlerpParams(Strict):
    t: float = Field(default=0.5, ge=0, le=1)
    """Interpolation position: 0 gives the first model, 1 the second."""
    eps: float = Field(default=1e-6, gt=0)
    """Below this angle (radians) the tensors count as parallel and are interpolated linearly."""


def slerp(v0: torch.Tensor, v1: torch.Tensor, t: float, eps: float = 1e-6) -> torch.Tensor:
    a, b = v0.flatten().double(), v1.flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return (1 - t) * v0 + t * v1
    cos = torch.clamp((a / na) @ (b / nb), -1.0, 1.0)
    omega = float(torch.arccos(cos))
    if omega < eps or abs(math.sin(omega)) < eps:
        return (1 - t) * v0 + t * v1
    s = math.sin(omega)
    out = math.sin((1 - t) * omega) / s * a + math.sin(t * omega) / s * b
    return out.reshape(v0.shape).to(v0.dtype)


@MERGE_METHODS.register("slerp")
class Slerp(MergeMethod):
    """Spherical interpolation between exactly two models, tensor by tensor."""

    Params = SlerpParams
    n_models = 2

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        p: SlerpParams = self.params  # type: ignore[assignment]
        return slerp(tensors[0], tensors[1], p.t, p.eps)
