"""Multi-SLERP: a weighted spherical average of any number of models, optionally of their task vectors
(mergekit 0.1.5's `multislerp`; Goddard, "Multi-SLERP", goddard.blog/posts/multislerp-wow-what-a-cool-idea;
no paper). Per tensor, with v_i the flattened tensors (or task vectors theta_i - theta_base when `base_model`
is set) and weights w_i (divided by their sum when `normalize_weights`):

    u_i = v_i / (|v_i| + eps)                      points on the unit sphere
    m   = sum_i w_i u_i / |sum_i w_i u_i|          the weighted Euclidean mean, projected to the sphere
    g   = sum_i w_i (u_i - <u_i, m> m)             the weighted mean of the points in m's tangent space
    r   = cos(|g| + eps) m + sin(|g| + eps) / (|g| + eps) g      (exponential map back to the sphere)
    out = (sum_i w_i |v_i|) r  (+ theta_base)

Note (what the tests show): the tangent mean g at the normalised Euclidean mean is zero in exact arithmetic
(sum_i w_i u_i - <sum_i w_i u_i, m> m = 0 when m is that sum's direction), so the result is the normalised
weighted mean of the directions ("nlerp") scaled by the weighted mean norm, up to float rounding and
cos(eps) ~ 1. For two models it is not SLERP at t = w_1 except at equal weights and norms.

When the weighted sum of directions vanishes (|sum w_i u_i| < eps): two models fall back to the linear
w_0 v_0 + w_1 v_1 (+ base); more models are refused (antipodal inputs with balancing weights). One model is
returned as is. Arithmetic in float32 in mergekit's order; memory: one unit vector per model plus the
tangent accumulation, model by model (mergekit stacks several copies of all models).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class MultiSlerpParams(Strict):
    normalize_weights: bool = True
    """Divide the weights by their sum."""
    eps: float = Field(default=1e-8, gt=0)
    """Added to norms before dividing; a weighted direction sum shorter than this counts as zero."""


def multislerp(
    tensors: list[torch.Tensor],
    weights: list[float],
    base: Optional[torch.Tensor] = None,
    normalize_weights: bool = True,
    eps: float = 1e-8,
    name: str = "",
) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    shape = tensors[0].shape
    w = torch.tensor(weights, dtype=torch.float32)
    if normalize_weights:
        w = w / w.sum()
    units = []
    norms = []
    for x in tensors:
        v = (x - base) if base is not None else x.clone()
        v = v.reshape(-1)
        n = torch.norm(v, dim=-1, keepdim=True)
        v.div_(n + eps)
        units.append(v)
        norms.append(n)
    mean = units[0] * w[0]
    for u, wi in zip(units[1:], w[1:]):
        mean.add_(u * wi)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if len(tensors) == 2:
            del units, mean
            d0 = (tensors[0] - base) if base is not None else tensors[0]
            d1 = (tensors[1] - base) if base is not None else tensors[1]
            out = d0 * w[0]
            out.add_(d1 * w[1])
            return (out + base) if base is not None else out
        raise ValueError(
            f"tensor {name!r}: multislerp's weighted sum of the models' directions is zero (antipodal models "
            "whose weights balance out, e.g. a and -a with equal weights); change the weights"
        )
    mean.div_(mean_norm)
    tangent = torch.zeros_like(mean)
    for u, wi in zip(units, w):
        g = u - (u * mean).sum(-1, keepdim=True) * mean
        g.mul_(wi)
        tangent.add_(g)
        del g
    del units
    tn = torch.norm(tangent) + eps
    out = mean.mul_(torch.cos(tn))
    out.add_(tangent.mul_(torch.sin(tn) / tn))
    out.mul_((torch.cat(norms) * w).sum())
    out = out.view(shape)
    return out.add_(base) if base is not None else out


@MERGE_METHODS.register("multislerp")
class MultiSlerp(MergeMethod):
    """Weighted spherical average of the models' directions (or task vectors), scaled by their mean norm."""

    Params = MultiSlerpParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0}

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        p: MultiSlerpParams = self.params  # type: ignore[assignment]
        return multislerp(tensors, weights, base, p.normalize_weights, p.eps, ctx.name)

    def check_weights(self, weights: list[float]) -> Optional[str]:
        p: MultiSlerpParams = self.params  # type: ignore[assignment]
        if p.normalize_weights and abs(sum(weights)) < 1e-12:
            return f"the weights {weights} sum to 0 and normalize_weights divides by their sum; change them"
        return None
