"""Merge after every stage: keep each stage's task vector and re-merge them into the base with task
arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic", ICLR), the weight-space route to
continual learning (model merging as in the surveys' "merge-based" methods, e.g. MagMax, Marczak et al. 2024).

Stage k starts from the current merged model theta_{k-1} and ends at theta'_k; its task vector is
tau_k = theta'_k - theta_{k-1}. After the stage the model becomes

    theta_k = theta_0 + weight * sum_{j<=k} tau_j

with theta_0 the weights before the first stage. `weight` = 1 reproduces sequential fine-tuning; smaller
weights shrink every update toward the base, trading plasticity for stability. Task vectors are kept on
CPU (one per stage, so later merge methods such as TIES can use them; `keep: sum` keeps only their sum).

Sharded (FSDP2): base, start and task vectors are kept as shards laid out like the parameters (on the
parameters' device, 1/N of a model each per process), and the merge is elementwise on each process's shards,
as unsharded; a checkpoint holds whole tensors (gathered in `state_dict`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import gathered, laid_out, snapshot, trainable
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import is_sharded


class MergeParams(Strict):
    weight: float = Field(default=0.5, gt=0)
    """Task-arithmetic scaling lambda of the summed task vectors."""
    keep: Literal["all", "sum"] = "all"
    """Keep every stage's task vector, or only their running sum (memory of one model copy)."""


def _held(t: torch.Tensor) -> torch.Tensor:
    """Where kept state lives: on the CPU, or a shard where it is (see the module doc)."""
    return t if is_sharded(t) else t.cpu()


@STRATEGIES.register("merge_after_stage")
class MergeAfterStage(Strategy):
    """Keep each stage's task vector; after every stage set the model to base + weight * sum of them."""

    Params = MergeParams
    supports_fsdp = True
    supports_deepspeed = True  # it writes the weights after the stage, on the plain model

    def __init__(self, params: MergeParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.base: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}
        self.vectors: list[dict[str, torch.Tensor]] = []

    def before_stage(self, ctx: StageContext) -> None:
        self.start = {k: v if is_sharded(v) else v.cpu() for k, v in snapshot(ctx.model).items()}
        if not self.base:
            self.base = {k: v.clone() for k, v in self.start.items()}

    @torch.no_grad()
    def after_stage(self, ctx: StageContext) -> None:
        p: MergeParams = self.params  # type: ignore[assignment]
        reshard(ctx.model)  # sharded: write into the shards, not into copies an evaluation left gathered
        params = trainable(ctx.model)
        self.base, self.start = laid_out(self.base, params), laid_out(self.start, params)
        self.vectors = [laid_out(v, params) for v in self.vectors]
        tau = {k: _held(params[k].detach()) - self.start[k] for k in self.start}
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
        return {
            "base": gathered(self.base),
            "start": gathered(self.start),
            "vectors": [gathered(v) for v in self.vectors],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base = dict(state.get("base", {}))
        self.start = dict(state.get("start", {}))
        self.vectors = [dict(v) for v in state.get("vectors", [])]
