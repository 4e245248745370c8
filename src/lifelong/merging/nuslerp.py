"""NuSLERP: SLERP between two models set by their weights, over whole tensors or over row/column vectors, and
optionally over task vectors (mergekit 0.1.5's `nuslerp`, Goddard; mergekit has no paper for it and lifelong
follows its semantics; SLERP itself is Shoemake 1985).

With the two models' weights w0, w1, t = w1 / (w0 + w1) (0.5 when |w0 + w1| < 1e-6). Without a base the two
tensors v0, v1 are interpolated; with `base_model` the task vectors v_i = theta_i - theta_base are, and the
result is added to the base:

    slerp_t(v0, v1) = (sin((1 - t) Omega) v0 + sin(t Omega) v1) / sin(Omega),   cos Omega = <v0/|v0|, v1/|v1|>

with norms clamped below at 1e-7, and the linear (1 - t) v0 + t v1 where 1 - cos^2 Omega <= 1e-16
(parallel or antiparallel directions).

- `nuslerp_flatten: true` (default): one angle for the whole (flattened) tensor.
- `nuslerp_flatten: false`, `nuslerp_row_wise: false`: one angle per vector along the LAST dimension, i.e.
  per row of a [out, in] weight matrix (per output unit).
- `nuslerp_flatten: false`, `nuslerp_row_wise: true`: one angle per vector along the FIRST dimension, i.e. per
  column of a [out, in] weight matrix (per input feature). (mergekit's docs word this the other way round,
  thinking of the transposed matrix; this is what its code does and what lifelong does.)
1-D tensors (norms, biases) are one vector in every mode.

Arithmetic in float32 in mergekit's order: outputs equal mergekit's on float32 inputs (bit for bit or within
float rounding, see docs). Memory: the normalised tensors are freed before the interpolation; the linear
branch is computed only for vectors that need it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext

NORM_CLAMP = 1e-7
"""Vector norms are clamped below at this before normalising."""
COLINEAR_EPS = 1e-8
"""Vectors with 1 - cos^2 <= COLINEAR_EPS^2 are interpolated linearly."""


class NuSlerpParams(Strict):
    nuslerp_flatten: bool = True
    """One angle for the whole tensor (true) or one per row/column vector (false)."""
    nuslerp_row_wise: bool = False
    """With nuslerp_flatten false: vectors along the first dimension (true) instead of the last (false)."""


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, row_wise: bool = False, flatten: bool = True) -> torch.Tensor:
    """SLERP at t from v0 to v1 over the flattened tensors, or per vector along the last (row_wise false) or
    first (row_wise true) dimension."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)
    u = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=NORM_CLAMP)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=NORM_CLAMP)
    u.mul_(u1)
    del u1
    cos = torch.sum(u, dim=-1, keepdim=True).clamp(-1, 1)
    del u
    colinear = (1 - cos.square()) <= COLINEAR_EPS**2
    omega = torch.acos(torch.where(colinear, 0, cos))
    out = torch.sin((1 - t) * omega) * v0
    out.add_(torch.sin(t * omega) * v1)
    out.div_(torch.sin(omega))
    if bool(colinear.any()):
        lin = (1 - t) * v0
        lin.add_(t * v1)
        out = torch.where(colinear, lin, out)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)


@MERGE_METHODS.register("nuslerp")
class NuSlerp(MergeMethod):
    """SLERP of two models (or of their task vectors against `base_model`) at t = w1 / (w0 + w1)."""

    Params = NuSlerpParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0}

    @classmethod
    def check_inputs(cls, n_models: int, has_base: bool) -> Optional[str]:
        """Why these inputs cannot be merged (n_models excludes the base), or None."""
        if n_models != 2:
            return f"nuslerp takes exactly 2 models besides the base_model, got {n_models}"
        return None

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        self.require_inputs(tensors, base, ctx)
        p: NuSlerpParams = self.params  # type: ignore[assignment]
        total = weights[0] + weights[1]
        t = 0.5 if abs(total) < 1e-6 else weights[1] / total
        if base is None:
            return nuslerp(t, tensors[0], tensors[1], p.nuslerp_row_wise, p.nuslerp_flatten)
        out = nuslerp(t, tensors[0] - base, tensors[1] - base, p.nuslerp_row_wise, p.nuslerp_flatten)
        return out.add_(base)
