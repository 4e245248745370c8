"""DARE (Yu et al. 2024, "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a
Free Lunch", ICML): Drop And REscale. Each entry of every task vector tau_i is dropped with probability p
and the survivors are rescaled by 1 / (1 - p), so E[tau~_i] = tau_i; the sparsified task vectors are then
merged with `combine` (linear average of the models, task arithmetic, or TIES). Masks are drawn from a
generator seeded by (seed, tensor name, model index): reproducible and independent of tensor order.

This is lifelong's own DARE (drop probability `p`, rescale by exactly 1/(1-p), a choice of combination);
mergekit's DARE (keep probability `density` per model, L1-norm rescale) is `dare_ties` / `dare_linear`."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import ConfigDict, Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext, zero_sum
from lifelong.merging.sparsify import elect_and_merge, seeded_generator, trim_topk


class DareParams(Strict):
    model_config = ConfigDict(populate_by_name=True)
    p: float = Field(default=0.9, ge=0, lt=1)
    """Drop probability of each delta entry (the paper drops up to 90-99%)."""
    rescale: bool = True
    """Rescale survivors by 1/(1-p) (without it the merge shrinks toward the base)."""
    combine: Literal["linear", "task_arithmetic", "ties"] = "task_arithmetic"
    """How the sparsified task vectors are merged."""
    lambda_: float = Field(default=1.0, alias="lambda")
    """Scaling of the merged task vector (task_arithmetic and ties)."""
    density: float = Field(default=1.0, gt=0, le=1)
    """TIES trim density applied after dropping (combine: ties; 1 keeps every survivor)."""
    sign: Literal["mass", "frequency"] = "mass"
    """TIES sign election rule (combine: ties)."""


def drop_mask(shape: torch.Size, p: float, seed: int, name: str, index: int) -> torch.Tensor:
    """Keep mask: u >= p with u uniform from the (seed, name, index) generator."""
    return torch.rand(shape, generator=seeded_generator(seed, name, index)) >= p


@MERGE_METHODS.register("dare")
class Dare(MergeMethod):
    """Drop delta entries with probability p, rescale by 1/(1-p), then merge."""

    Params = DareParams
    uses_base = True

    def check_weights(self, weights: list[float]) -> Optional[str]:
        return zero_sum(weights) if self.params.combine == "linear" else None  # type: ignore[attr-defined]

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        assert base is not None
        q: DareParams = self.params  # type: ignore[assignment]
        taus = []
        for i, t in enumerate(tensors):
            tau = (t - base) * drop_mask(t.shape, q.p, ctx.seed, ctx.name, i).to(t.dtype)
            taus.append(tau / (1 - q.p) if q.rescale else tau)
        if q.combine == "linear":
            return base + sum(w * t for w, t in zip(weights, taus)) / sum(weights)  # type: ignore[return-value]
        if q.combine == "task_arithmetic":
            return base + q.lambda_ * sum(w * t for w, t in zip(weights, taus))  # type: ignore[return-value]
        taus = [trim_topk(w * t, q.density) for w, t in zip(weights, taus)]
        return base + q.lambda_ * elect_and_merge(taus, q.sign)
