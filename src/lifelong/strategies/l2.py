"""L2 penalty toward the weights at the end of the previous stage (L2-SP, Li, Grandvalet and Davoine 2018,
"Explicit inductive bias for transfer learning with convolutional networks"; the anchor is moved to the
end of every stage, as in continual-learning baselines).

Penalty: (weight / 2) * sum_i (theta_i - theta*_i)^2 over trainable parameters. Its gradient,
weight * (theta - theta*), is added to the parameters' gradients in `before_step` (after the backward pass
and the DDP all-reduce, before clipping), which is exactly the gradient of loss + penalty without building
an autograd graph over every parameter.

Sharded (FSDP2): the anchor is kept as shards laid out like the parameters, and the update is elementwise on
each process's shards of parameter, gradient and anchor, so the gradient equals the unsharded one; a
checkpoint holds the whole anchor (gathered in `state_dict`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import gathered, laid_out, snapshot, trainable
from lifelong.strategies.base import READS_WHOLE_WEIGHTS, StageContext, Strategy
from lifelong.train.sharding import is_sharded, local_tensor


class L2Params(Strict):
    weight: float = Field(default=0.01, ge=0)
    """Strength of the pull toward the previous stage's weights (lambda)."""


@STRATEGIES.register("l2")
class L2(Strategy):
    """L2 penalty toward the previous stage's weights (L2-SP style)."""

    Params = L2Params
    supports_fsdp = True
    supports_deepspeed = True  # the gradient term through `penalty` (tests/test_deepspeed.py)
    zero3_note = READS_WHOLE_WEIGHTS

    def __init__(self, params: L2Params | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.anchor: dict[str, torch.Tensor] = {}
        self._version = 0  # bumped whenever the anchor changes (invalidates the device cache)

    def before_stage(self, ctx: StageContext) -> None:
        if not self.anchor:  # first stage: anchor at the starting (pre-trained) weights
            self.anchor = snapshot(ctx.model)
            self._version += 1

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        """Under DeepSpeed only (`ctx.engine_steps`: no gradient reaches `before_step`): (lambda / 2)
        ||theta - theta*||^2 into the loss, whose gradient is the lambda (theta - theta*) `before_step` adds
        otherwise."""
        if not ctx.engine_steps or not self.anchor:
            return None
        params, _, anchors = self._pairs(ctx.model)
        lam = self.params.weight  # type: ignore[attr-defined]
        terms = [((q - a) ** 2).sum() for q, a in zip(params, anchors)]
        return lam / 2 * torch.stack(terms).sum() if terms else None

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        if not self.anchor:
            return
        lam = self.params.weight  # type: ignore[attr-defined]
        params, values, anchors = self._pairs(ctx.model)
        live = [i for i, p in enumerate(params) if p.grad is not None]
        grads = [params[i].grad for i in live]
        if self._sharded:  # the same elementwise update on this process's shards
            grads = [local_tensor(g) for g in grads]
        diff = torch._foreach_sub([values[i] for i in live], [anchors[i] for i in live])
        torch._foreach_add_(grads, diff, alpha=lam)  # grad += lam (theta - theta*)

    def _pairs(self, model: Any) -> tuple[list, list, list]:
        """(parameters, their values, anchors on the parameters' device), cached per model and anchor;
        sharded: values and anchors are this process's shards (local tensors)."""
        key = (id(model), self._version)
        if getattr(self, "_cache_key", None) != key:
            named = trainable(model)
            self.anchor = laid_out(self.anchor, named)
            names = [n for n in named if n in self.anchor]
            self._sharded = any(is_sharded(named[n]) for n in names)
            loc = local_tensor if self._sharded else (lambda t: t)
            self._cache = (
                [named[n] for n in names],
                [loc(named[n]).detach() for n in names],
                [loc(self.anchor[n]).to(loc(named[n]).device) for n in names],
            )
            self._cache_key = key
        return self._cache

    def after_stage(self, ctx: StageContext) -> None:
        self.anchor = snapshot(ctx.model)
        self._version += 1

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": gathered(self.anchor)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = dict(state.get("anchor", {}))
        self._version += 1
