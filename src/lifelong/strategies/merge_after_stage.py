"""Merge after every stage: keep each stage's task vector and re-merge them into the base with task
arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic", ICLR), the weight-space route to
continual learning (model merging as in the surveys' "merge-based" methods, e.g. MagMax, Marczak et al. 2024).

Stage k starts from the current merged model theta_{k-1} and ends at theta'_k; its task vector is
tau_k = theta'_k - theta_{k-1}. After the stage the model becomes

    theta_k = theta_0 + weight * sum_{j<=k} tau_j

with theta_0 the weights before the first stage. `weight` = 1 reproduces sequential fine-tuning; smaller
weights shrink every update toward the base, trading plasticity for stability. Task vectors are kept on
CPU (one per stage, so later merge methods such as TIES can use them; `keep: sum` keeps only their sum).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import snapshot, trainable
from lifelong.strategies.base import StageContext, Strategy


class MergeParams(Strict):
    weight: float = Field(default=0.5, gt=0)
    """Task-arithmetic scaling lambda of the summed task vectors."""
    keep: Literal["all", "sum"] = "all"
    """Keep every stage's task vector, or only their running sum (memory of one model copy)."""


@STRATEGIES.register("merge_after_stage")
class MergeAfterStage(Strategy):
    """Keep each stage's task vector; after every stage set the model to base + weight * sum of them."""

    Params = MergeParams

    def __init__(self, params: MergeParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.base: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}
        self.vectors: list[dict[str, torch.Tensor]] = []

    def before_stage(self, ctx: StageContext) -> None:
        self.start = {k: v.cpu() for k, v in snapshot(ctx.model).items()}
        if not self.base:
            self.base = {k: v.clone() for k, v in self.start.items()}

    @torch.no_grad()
    def after_stage(self, ctx: StageContext) -> None:
        p: MergeParams = self.params  # type: ignore[assignment]
        params = trainable(ctx.model)
        tau = {k: params[k].detach().cpu() - self.start[k] for k in self.start}
        if p.keep == "sum" and self.vectors:
            self.vectors = [{k: self.vectors[0][k] + tau[k] for k in tau}]
        else:
            self.vectors.append(tau)
        for k, q in params.items():
            total = sum(v[k] for v in self.vectors)
            q.copy_((self.base[k] + p.weight * total).to(q.device, q.dtype))
        self.start = {}

    def cost(self) -> dict[str, Any]:
        return {"stored_task_vectors": len(self.vectors)}

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base, "start": self.start, "vectors": self.vectors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = dict(state.get("base", {}))
        self.start = dict(state.get("start", {}))
        self.vectors = [dict(v) for v in state.get("vectors", [])]
