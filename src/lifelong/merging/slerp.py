"""SLERP: spherical linear interpolation of two models, tensor by tensor (Shoemake 1985, "Animating rotation
with quaternion curves", SIGGRAPH; no arXiv id). With v0, v1 a tensor of each model (flattened) and Omega the
angle between their directions,

    slerp(t) = sin((1 - t) Omega) / sin(Omega) * v0 + sin(t Omega) / sin(Omega) * v1,

and plain linear interpolation (1 - t) v0 + t v1 when the directions are (anti)parallel.

Conventions (mergekit 0.1.5's `slerp`):
- With `base_model` set (mergekit requires it; a mergekit config lists the base among its two models, or lists
  only the other one), v0 is the base and v1 the other model: t = 0 gives the base, t = 1 the other model.
- Without `base_model` (lifelong's older convention, kept): v0 is `models[0]`, v1 is `models[1]`.
- Norms of 1e-8 or less count as 1 (so a zero tensor gives cos(t pi/2) v0 + sin(t pi/2) v1, as in mergekit);
  |cos Omega| > 0.9995 counts as parallel (linear interpolation).
- Arithmetic in float32 in mergekit's order: the norms and the dot product of the normalised tensors are
  accumulated over chunks of 2^20 elements (a norm of the chunk norms; a sum of the chunk dot products), the
  coefficients are float32 and the output is written chunk by chunk into one float32 tensor. Outputs equal
  mergekit's bit for bit on float32 inputs. Memory: the output plus a few chunk-sized temporaries (about 12 MB),
  no float64 or whole-tensor copies of the inputs.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext

CHUNK = 1 << 20
"""Elements per chunk of the norm, dot product and output passes (bounds the float32 scratch space)."""
DOT_THRESHOLD = 0.9995
"""|cos Omega| above this: the directions count as parallel and the tensors are interpolated linearly."""
NORM_EPS = 1e-8
"""Norms at or below this count as 1 (a zero tensor has no direction)."""


class SlerpParams(Strict):
    t: float
    """Interpolation position (required, as in mergekit): 0 gives the base (or `models[0]` without a base),
    1 the other model; values outside [0, 1] extrapolate along the great circle. A gradient list over layers
    or a `filter:` list is resolved per tensor by the engine."""


def slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from v0 (t = 0) to v1 (t = 1), float32 out, same shape as v0."""
    if v0.shape != v1.shape:
        raise ValueError(f"slerp: shapes {tuple(v0.shape)} and {tuple(v1.shape)} differ")
    a = v0.float().reshape(1, -1)
    b = v1.float().reshape(1, -1)
    tt = torch.tensor([[t]], dtype=torch.float32)
    n = a.shape[1]
    if n == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape)
    spans = [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
    na = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(a[:, s:e], dim=1, keepdim=True) for s, e in spans]), dim=0
    )
    nb = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(b[:, s:e], dim=1, keepdim=True) for s, e in spans]), dim=0
    )
    na = torch.where(na > NORM_EPS, na, 1)
    nb = torch.where(nb > NORM_EPS, nb, 1)
    parts = []
    for s, e in spans:
        x = a[:, s:e] / na
        y = b[:, s:e] / nb
        x.mul_(y)
        parts.append(x.sum(dim=1, keepdim=True))
        del x, y
    dot = torch.stack(parts).sum(dim=0).clamp(-1, 1)
    parallel = dot.abs() > DOT_THRESHOLD
    omega = torch.acos(torch.where(parallel, 0, dot))
    sin_omega = torch.sin(omega)
    ca = torch.where(parallel, 1 - tt, torch.sin((1 - tt) * omega) / sin_omega)
    cb = torch.where(parallel, tt, torch.sin(tt * omega) / sin_omega)
    out = torch.empty_like(a)
    for s, e in spans:
        chunk = out[:, s:e]
        torch.mul(a[:, s:e], ca, out=chunk)
        chunk.add_(cb * b[:, s:e])
    return out.reshape(v0.shape)


@MERGE_METHODS.register("slerp")
class Slerp(MergeMethod):
    """Spherical interpolation of two models per tensor: from `base_model` to the other model (mergekit's
    convention), or from `models[0]` to `models[1]` when no base_model is set."""

    Params = SlerpParams
    model_params: ClassVar[dict[str, Any]] = {}
    """mergekit's slerp takes no per-model parameter (a `weight` is ignored)."""

    @classmethod
    def check_inputs(cls, n_models: int, has_base: bool) -> Optional[str]:
        """Why these inputs cannot be merged (n_models excludes the base), or None."""
        if has_base and n_models != 1:
            return (
                f"slerp with a base_model interpolates from the base to exactly one other model, got {n_models} "
                "others; list the base and one model (or drop base_model to go from models[0] to models[1])"
            )
        if not has_base and n_models != 2:
            return f"slerp without a base_model takes exactly 2 models, got {n_models}"
        return None

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        self.require_inputs(tensors, base, ctx)
        p: SlerpParams = self.params  # type: ignore[assignment]
        if base is not None:
            return slerp(base, tensors[0], p.t)
        return slerp(tensors[0], tensors[1], p.t)
