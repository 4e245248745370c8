"""Elastic Reset (Noukhovitch et al. 2023, "Language Model Alignment with Elastic Reset", NeurIPS): keep an
exponential moving average of the policy; every `reset_every` optimizer steps, reset the policy to the EMA
and the EMA to the initial model (the weights at the start of the run's first stage this strategy sees),
which limits drift (and so the alignment tax) without a KL penalty.

The EMA is updated in `before_step` from the weights before the step (one step of lag). On a reset step the
update of that step is skipped (gradients zeroed), so the policy is exactly the EMA afterwards; optimizer
moments are kept.

Sharded (FSDP2): the EMA and the initial weights are kept as shards laid out like the parameters, and
updates and resets are elementwise on each process's shards, as unsharded; a checkpoint holds whole tensors.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import gathered, laid_out, snapshot, trainable
from lifelong.strategies.base import StageContext, Strategy


class ElasticResetParams(Strict):
    ema_decay: float = Field(default=0.99, gt=0, lt=1)
    """EMA decay per optimizer step."""
    reset_every: int = Field(default=50, ge=1)
    """Optimizer steps between resets."""


@STRATEGIES.register("elastic_reset")
class ElasticReset(Strategy):
    """Elastic Reset: periodic reset of the policy to its EMA and of the EMA to the initial model."""

    Params = ElasticResetParams
    supports_fsdp = True
    deepspeed_note: ClassVar[str] = (
        "it writes the weights in before_step, and under DeepSpeed the engine steps from its own fp32 master "
        "copy inside backward, so the written weights would be overwritten at the next step"
    )

    def __init__(self, params: ElasticResetParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.init: dict[str, torch.Tensor] = {}
        self.ema: dict[str, torch.Tensor] = {}
        self.count = 0
        self.resets = 0
        self._laid_for = 0  # id of the first parameter the state was last laid out for

    def before_stage(self, ctx: StageContext) -> None:
        if not self.init:
            self.init = snapshot(ctx.model)
            self.ema = {k: v.clone() for k, v in self.init.items()}

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        if not self.ema:
            return
        p: ElasticResetParams = self.params  # type: ignore[assignment]
        params = trainable(ctx.model)
        first = id(next(iter(params.values()), None))
        if first != self._laid_for:  # new parameters (sharded by the stage): whole state becomes their shards
            self.init, self.ema = laid_out(self.init, params), laid_out(self.ema, params)
            self._laid_for = first
        for name, q in params.items():
            if name in self.ema:
                self.ema[name].mul_(p.ema_decay).add_(q.detach(), alpha=1 - p.ema_decay)
        self.count += 1
        if self.count % p.reset_every == 0:
            for name, q in params.items():
                if name in self.ema:
                    q.copy_(self.ema[name])
                    self.ema[name].copy_(self.init[name])
                    if q.grad is not None:
                        q.grad.zero_()
            self.resets += 1

    def cost(self) -> dict[str, Any]:
        return {"elastic_resets": self.resets}

    def state_dict(self) -> dict[str, Any]:
        return {"init": gathered(self.init), "ema": gathered(self.ema), "count": self.count, "resets": self.resets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init, self.ema = dict(state.get("init", {})), dict(state.get("ema", {}))
        self.count, self.resets = int(state.get("count", 0)), int(state.get("resets", 0))
        self._laid_for = 0
