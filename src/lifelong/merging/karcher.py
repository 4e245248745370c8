"""Karcher mean: the Riemannian centre of mass of the models' directions on the unit sphere, scaled by their
mean norm (Karcher 1977, "Riemannian center of mass and mollifier smoothing", Comm. Pure Appl. Math. 30; no
arXiv id; mergekit 0.1.5's `karcher`, which cites arXiv:2603.04972). Per tensor, with x_i the flattened
tensors of the n inputs:

    u_i = x_i / |x_i|                 (inputs with |x_i| <= tol are left out of the direction average)
    m   = argmin_{|m| = 1} sum_i a_i d(m, u_i)^2,   d = great-circle distance, a_i = 1/n renormalised
          over the kept inputs

found by Riemannian gradient descent with unit step: start at the normalised Euclidean mean sum_i a_i u_i
(or u_0 if that is shorter than tol), then repeat up to `max_iter` times

    g = sum_i a_i theta_i / sin(theta_i) (u_i - cos(theta_i) m),    cos(theta_i) = <m, u_i>
        (the log map of every u_i at m; points closer than tol in angle are skipped)
    stop if |g| < tol;  m <- cos|g| m + sin|g| g/|g| (exponential map), renormalised

The fixed point (g = 0, zero Riemannian gradient of the sum of squared distances) is the Karcher mean. The
output is (sum_i |x_i| / n) m. Every input is weighted equally (mergekit's karcher has no `weight`); a
`base_model` is averaged like any model (`base_in_models = "input"`, as mergekit includes it). Arithmetic in
float32 in mergekit's order; memory: the inputs plus about four tensor-sized buffers (unit vectors are
recomputed from the inputs instead of being stored, which gives the same numbers).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class KarcherParams(Strict):
    max_iter: int = Field(default=10, ge=0)
    """Most gradient steps on the sphere."""
    tol: float = Field(default=1e-5, gt=0)
    """Stop when the Riemannian gradient's norm is below this; also the smallest norm an input needs to count
    as a direction, and the smallest angle at which an input contributes to the gradient."""


def karcher_mean(tensors: list[torch.Tensor], max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    """Equally weighted Karcher mean of the tensors' directions times their mean norm."""
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    norms = [torch.linalg.vector_norm(x) for x in tensors]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return torch.zeros_like(tensors[0])
    total = sum(alphas[i] for i in valid)
    a = [alphas[i] / total for i in valid]

    def unit(i: int) -> torch.Tensor:
        return tensors[i] / norms[i]

    mean = torch.zeros_like(tensors[0])
    for ai, i in zip(a, valid):
        mean += ai * unit(i)
    mean_norm = torch.linalg.vector_norm(mean)
    mean = unit(valid[0]) if mean_norm.item() < tol else mean / mean_norm
    for _ in range(max_iter):
        grad = torch.zeros_like(mean)
        for ai, i in zip(a, valid):
            u = unit(i)
            cos = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(cos)
            if theta.item() < tol:
                continue
            u.sub_(cos * mean)
            u.mul_(ai * (theta / torch.sin(theta)))
            grad += u
            del u
        grad_norm = torch.linalg.vector_norm(grad)
        if grad_norm.item() < tol:
            break
        step = torch.cos(grad_norm) * mean
        step.add_(torch.sin(grad_norm) * grad.div_(grad_norm))
        mean = step
        del grad, step
        n = torch.linalg.vector_norm(mean)
        if n.item() > tol:
            mean = mean / n
    scale = sum(al * n for al, n in zip(alphas, norms))
    return scale * mean


@MERGE_METHODS.register("karcher")
class Karcher(MergeMethod):
    """Karcher (Riemannian) mean of the models' directions on the sphere, times their mean norm."""

    Params = KarcherParams
    model_params: ClassVar[dict[str, Any]] = {}
    """Every input counts equally (mergekit's karcher takes no per-model parameter)."""
    base_in_models: ClassVar[Literal["base", "input"]] = "input"

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        p: KarcherParams = self.params  # type: ignore[assignment]
        return karcher_mean(tensors, p.max_iter, p.tol)
