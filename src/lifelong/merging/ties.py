"""TIES-Merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", NeurIPS).

For task vectors tau_i = theta_i - theta_base (scaled by their weights):
1. Trim: keep the `density` fraction of entries of largest magnitude of each tau_i (per tensor, or over the
   whole model with `trim: global`), zero the rest.
2. Elect: the sign of every entry is the sign of the summed trimmed values (`sign: mass`, the paper) or of
   the summed signs (`sign: frequency`).
3. Disjoint merge: average, per entry, only the values that agree with the elected sign (zeros excluded).
theta = theta_base + lambda * tau_merged.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import ConfigDict, Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class TiesParams(Strict):
    model_config = ConfigDict(populate_by_name=True)
    density: float = Field(default=0.2, gt=0, le=1)
    """Fraction k of each task vector's entries kept by magnitude (the paper's top-k%, default 20%)."""
    lambda_: float = Field(default=1.0, alias="lambda")
    """Scaling of the merged task vector (`lambda` in the YAML)."""
    sign: Literal["mass", "frequency"] = "mass"
    """Sign election by total mass (paper) or by majority count."""
    trim: Literal["tensor", "global"] = "tensor"
    """Magnitude threshold per tensor, or one per model over all its tensors."""


def topk_threshold(tau: torch.Tensor, density: float) -> float:
    """Magnitude of the k-th largest entry, k = round(density * numel)."""
    if density >= 1:
        return 0.0
    k = max(1, int(round(density * tau.numel())))
    return float(tau.abs().flatten().kthvalue(tau.numel() - k + 1).values)


def trim_topk(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` fraction of entries with the largest magnitude (entries tied with the k-th
    largest are all kept)."""
    if density >= 1:
        return tau
    return torch.where(tau.abs() >= topk_threshold(tau, density), tau, torch.zeros_like(tau))


def elect_and_merge(taus: list[torch.Tensor], rule: str) -> torch.Tensor:
    stack = torch.stack(taus)  # (models, ...)
    if rule == "mass":
        sign = torch.sign(stack.sum(0))
    else:
        sign = torch.sign(torch.sign(stack).sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    total = (stack * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return total / count


@MERGE_METHODS.register("ties")
class Ties(MergeMethod):
    """Trim, elect sign, disjoint mean of task vectors."""

    Params = TiesParams
    uses_base = True

    def global_fraction(self) -> Optional[float]:
        p: TiesParams = self.params  # type: ignore[assignment]
        return p.density if p.trim == "global" else None

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        assert base is not None
        p: TiesParams = self.params  # type: ignore[assignment]
        taus = [w * (t - base) for w, t in zip(weights, tensors)]
        if p.trim == "global" and ctx.threshold is not None:
            ths = list(ctx.threshold)
        else:
            ths = [topk_threshold(t, p.density) if p.density < 1 else 0.0 for t in taus]
        # trim + elect + disjoint mean are elementwise once the thresholds are known: chunk the rows so the
        # temporaries stay small for large tensors (embeddings)
        out = torch.empty_like(base)
        flat_out, flat_base = out.view(-1), base.reshape(-1)
        flat = [t.reshape(-1) for t in taus]
        step = 1 << 22
        for a in range(0, flat_base.numel(), step):
            chunk = [
                torch.where(f[a : a + step].abs() >= th, f[a : a + step], torch.zeros_like(f[a : a + step]))
                for f, th in zip(flat, ths)
            ]
            flat_out[a : a + step] = flat_base[a : a + step] + p.lambda_ * elect_and_merge(chunk, p.sign)
        return out
