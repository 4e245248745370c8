"""TIES-Merging (Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", NeurIPS,
arXiv 2306.01708), mergekit 0.1.5's `ties`. For task vectors tau_i = theta_i - theta_base:

1. Trim: keep each tau_i's k = max(1, int(density_i * n)) entries of largest magnitude (exactly k; ties at
   the k-th place broken as torch's unstable descending sort orders them, as in mergekit); with `rescale`,
   scale the survivors back to tau_i's L1 norm.
2. Weight: w_i tau_i.
3. Elect: every entry's sign is that of the summed weighted values (`sign: mass`, the paper; a zero sum
   elects +) or of the summed signs (`sign: frequency`).
4. Disjoint merge: sum the agreeing non-zero entries; with `normalize` divide by the sum of their weights
   (a zero sum counts as 1).
theta = theta_base + lambda * tau_merged.

Defaults (mergekit's): per-model `weight` 1.0 and `density` 1.0 (no trim: give a density, e.g. 0.2 as in the
paper); global `normalize` true, `rescale` false, `lambda` 1.0, `int8_mask` false (no effect).

lifelong's earlier conventions, kept under explicit options:
- `trim_rule: threshold`: keep every entry with |w_i tau_i| >= the k-th largest, k = max(1, round(density n))
  (entries tied with the k-th are all kept); `trim: global` (one threshold per model over all its tensors,
  computed by the engine from `global_fractions`) implies it.
- `average: count`: divide by the number of agreeing entries instead of their weights, i.e.
  sum_agree(w_i tau_i) / count: weights scale the contributions without being normalised (what `ties` did
  before; equal to `average: weight` when every weight is 1).
The earlier election gave no sign to an entry whose sum was exactly 0 (now +, as mergekit).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch

from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import TensorContext
from lifelong.merging.sparsify import (
    Consensus,
    TaskVectorMethod,
    TaskVectorParams,
    apply_mask,
    elect_and_merge,
    threshold_k,
    trim_topk,
)

__all__ = ["Ties", "TiesParams", "elect_and_merge", "trim_topk"]  # the last two: lifelong's earlier rules (WISE)


class TiesParams(TaskVectorParams):
    normalize: bool = True
    """Divide by the sum of the agreeing entries' weights (or their number, `average: count`)."""
    sign: Literal["mass", "frequency"] = "mass"
    """Sign election by total mass (the paper, mergekit's `sum`) or by majority count (`count`)."""
    trim: Literal["tensor", "global"] = "tensor"
    """Magnitude trim per tensor, or one threshold per model over all its tensors (lifelong's)."""
    trim_rule: Literal["topk", "threshold"] = "topk"
    """`topk`: exactly max(1, int(density n)) entries (mergekit); `threshold`: every entry at or above the
    k-th largest magnitude, k = max(1, round(density n)) (lifelong's earlier trim)."""
    average: Literal["weight", "count"] = "weight"
    """Divisor of the disjoint mean: the agreeing weights (mergekit) or the agreeing count (lifelong's
    earlier rule)."""


@MERGE_METHODS.register("ties")
class Ties(TaskVectorMethod):
    """Trim, elect sign, disjoint mean of task vectors."""

    Params = TiesParams
    sparsifier = "magnitude"
    consensus = "sum"

    def global_fractions(self, model_params: list[dict[str, Any]]) -> Optional[list[float]]:
        """With `trim: global`, each model's density: the engine computes per model the magnitude threshold
        keeping that fraction of its weighted delta entries over all tensors and passes the thresholds in
        `ctx.threshold`."""
        p: TiesParams = self.params  # type: ignore[assignment]
        if p.trim != "global":
            return None
        return [float(mp.get("density", 1.0)) for mp in model_params]

    def consensus_rule(self) -> Optional[Consensus]:
        return "sum" if self.params.sign == "mass" else "count"  # type: ignore[attr-defined]

    def divide_rule(self) -> Literal["weight", "count"]:
        return self.params.average  # type: ignore[attr-defined,no-any-return]

    def keeps_whole(self, ctx: TensorContext, n: int) -> bool:
        p: TiesParams = self.params  # type: ignore[assignment]
        return p.trim_rule == "topk" and p.trim == "tensor" and super().keeps_whole(ctx, n)

    def sparsify(
        self, i: int, delta: torch.Tensor, weight: float, ctx: TensorContext, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        p: TiesParams = self.params  # type: ignore[assignment]
        if mask is not None or (p.trim_rule == "topk" and p.trim == "tensor"):
            return super().sparsify(i, delta, weight, ctx, mask)
        density = float(self.resolved(ctx, i)["density"])
        weighted = (weight * delta).abs()
        if p.trim == "global" and ctx.threshold is not None:
            th = float(ctx.threshold[i])
        elif density >= 1 or delta.numel() == 0:
            return delta
        else:
            th = float(weighted.reshape(-1).kthvalue(delta.numel() - threshold_k(density, delta.numel()) + 1).values)
        return apply_mask(delta, weighted >= th, p.rescale)
