"""L2 penalty toward the weights at the end of the previous stage (L2-SP, Li, Grandvalet and Davoine 2018,
"Explicit inductive bias for transfer learning with convolutional networks"; the anchor is moved to the
end of every stage, as in continual-learning baselines).

Penalty: (weight / 2) * sum_i (theta_i - theta*_i)^2 over trainable parameters. Its gradient,
weight * (theta - theta*), is added to the parameters' gradients in `before_step` (after the backward pass
and the DDP all-reduce, before clipping), which is exactly the gradient of loss + penalty without building
an autograd graph over every parameter.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import snapshot, trainable
from lifelong.strategies.base import StageContext, Strategy


class L2Params(Strict):
    weight: float = Field(default=0.01, ge=0)
    """Strength of the pull toward the previous stage's weights (lambda)."""


@STRATEGIES.register("l2")
class L2(Strategy):
    """L2 penalty toward the previous stage's weights (L2-SP style)."""

    Params = L2Params

    def __init__(self, params: L2Params | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.anchor: dict[str, torch.Tensor] = {}
        self._version = 0  # bumped whenever the anchor changes (invalidates the device cache)

    def before_stage(self, ctx: StageContext) -> None:
        if not self.anchor:  # first stage: anchor at the starting (pre-trained) weights
            self.anchor = snapshot(ctx.model)
            self._version += 1

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        if not self.anchor:
            return
        lam = self.params.weight  # type: ignore[attr-defined]
        params, anchors = self._pairs(ctx.model)
        live = [i for i, p in enumerate(params) if p.grad is not None]
        diff = torch._foreach_sub([params[i].detach() for i in live], [anchors[i] for i in live])
        torch._foreach_add_([params[i].grad for i in live], diff, alpha=lam)  # grad += lam (theta - theta*)

    def _pairs(self, model: Any) -> tuple[list, list]:
        """(parameters, anchors on the parameters' device), cached per model and anchor."""
        key = (id(model), self._version)
        if getattr(self, "_cache_key", None) != key:
            named = trainable(model)
            names = [n for n in named if n in self.anchor]
            self._cache = ([named[n] for n in names], [self.anchor[n].to(named[n].device) for n in names])
            self._cache_key = key
        return self._cache

    def after_stage(self, ctx: StageContext) -> None:
        self.anchor = snapshot(ctx.model)
        self._version += 1

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = dict(state.get("anchor", {}))
        self._version += 1
