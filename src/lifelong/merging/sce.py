"""SCE (Wan et al. 2024, "FuseChat: Knowledge Fusion of Chat Models", arXiv 2408.07990), mergekit 0.1.5's
`sce`: Select, Calculate, Erase over the task vectors tau_i = theta_i - theta_base of one tensor.

1. Select (`select_topk` < 1): keep the entries with the largest variance across the models: the
   k = int(select_topk * (number of entries of non-zero variance)) entries of largest population variance
   (ties at the k-th place broken as torch.topk breaks them), zeroed in every task vector elsewhere.
2. Calculate: model i's weight is the mean of its squared (selected) task vector, normalised to sum to 1
   (uniform 1/N when the sum is below 1e-6).
3. Erase: every entry's sign is elected by the sum of the task vectors (zero elects +); entries of the other
   sign (and zeros) are dropped.
theta = theta_base + sum_i c_i m_i tau_i / max(sum_i c_i m_i, 1e-6), with c_i the weights and m_i the
agreement masks.

Global: `select_topk` 1.0 (select everything), `int8_mask` (accepted, no effect). The per-model `weight` is
not used (mergekit's sce declares no per-model parameter; the weights come from step 2).
"""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext
from lifelong.merging.sparsify import CHUNK, consensus_mask


class SceParams(Strict):
    select_topk: float = Field(default=1.0, ge=0, le=1)
    """Fraction of the non-zero-variance entries kept by variance across the models (1: all)."""
    int8_mask: bool = False
    """mergekit's memory option for the masks; accepted, no effect on the result."""


def variance_mask(taus: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask (one tensor's shape) of the int(fraction * #non-zero-variance) entries of largest
    population variance across dim 0 of `taus`."""
    shape = taus.shape[1:]
    if fraction <= 0:
        return torch.zeros(shape, dtype=torch.bool)
    if fraction >= 1:
        return torch.ones(shape, dtype=torch.bool)
    var = torch.var(taus, dim=0, unbiased=False).reshape(-1)
    k = int(int(torch.count_nonzero(var)) * fraction)
    if k == 0:
        return torch.zeros(shape, dtype=torch.bool)
    n = var.numel()
    th = var.kthvalue(n - k + 1).values
    if int((var >= th).sum()) == k:  # no tie at the k-th place: the top k is unique
        return (var >= th).view(shape)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.topk(var, k=k, largest=True).indices] = True
    return mask.view(shape)


def sce_weights(taus: torch.Tensor) -> torch.Tensor:
    """Per model (dim 0), the mean of its squared task vector over the sum of these means (1/N if ~0)."""
    m = taus.square().reshape(taus.shape[0], -1).mean(dim=1)
    total = float(torch.sum(m))
    if abs(total) < 1e-6:
        return torch.ones_like(m) / m.shape[0]
    return m / total


@MERGE_METHODS.register("sce")
class Sce(MergeMethod):
    """Select by variance, weight by squared-delta mass, erase minority signs."""

    Params = SceParams
    uses_base = True

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        assert base is not None
        if not tensors:
            return base.clone()
        p: SceParams = self.params  # type: ignore[assignment]
        taus = torch.stack([t - base for t in tensors])
        if p.select_topk < 1:
            taus.mul_(variance_mask(taus, p.select_topk))
        col = sce_weights(taus).view(-1, 1)
        out = torch.empty(base.shape, dtype=torch.float32)
        flat_out, flat_base = out.view(-1), base.reshape(-1)
        flat = taus.view(taus.shape[0], -1)
        for a in range(0, flat_base.numel(), CHUNK):
            chunk = flat[:, a : a + CHUNK]
            erased = col * consensus_mask(chunk, "sum")
            merged = (chunk * erased).sum(0)
            torch.add(
                flat_base[a : a + CHUNK], merged.div_(erased.sum(0).clamp_(min=1e-6)), out=flat_out[a : a + CHUNK]
            )
        return out
