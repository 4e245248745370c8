"""Averaged Gradient Episodic Memory (Chaudhry et al. 2019, "Efficient Lifelong Learning with A-GEM", ICLR).

An episodic memory keeps examples of earlier stages (reservoir sampling, as `replay`). Before every
optimizer step, the reference gradient g_ref is computed on a batch drawn from the memory; if the update
gradient g conflicts with it (g . g_ref < 0), g is projected (A-GEM eq. 11):

    g <- g - (g . g_ref / g_ref . g_ref) g_ref

so the loss on the memory does not increase to first order. The projection runs after the DDP all-reduce on
every process with the same memory batch, so all processes apply the same update.

Sharded (FSDP2): the reference gradient comes from a backward pass of the sharded model on the same memory
batch on every process (FSDP2 averages equal gradients: the one-process gradient), each process holds its
shards of g and g_ref, the two dot products are sums of per-shard partial sums all-reduced (one collective
each), and the projection is elementwise on the shards: the update equals the unsharded one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import trainable
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import StageContext, Strategy
from lifelong.strategies.replay import Replay, ReplayParams
from lifelong.train.sharding import full_tensor, is_sharded


class AGEMParams(Strict):
    memory_size: int = Field(default=1000, ge=1)
    """Examples kept in the episodic memory over all earlier stages."""
    sample_size: int = Field(default=16, ge=1)
    """Memory examples per reference gradient."""


def _dot(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> float:
    """sum_i <x_i, y_i> as one float. Sharded gradients: the per-tensor sums are partial (this process's
    shards), so they are added up and all-reduced once."""
    if xs and is_sharded(xs[0]):
        return float(full_tensor(sum((a * b).sum(dtype=torch.float64) for a, b in zip(xs, ys))))  # type: ignore[arg-type]
    return sum(float((a * b).sum()) for a, b in zip(xs, ys))


@STRATEGIES.register("agem")
class AGEM(Strategy):
    """A-GEM: project the update when it conflicts with the gradient on an episodic-memory batch."""

    Params = AGEMParams
    stores_examples = True
    supports_fsdp = True
    deepspeed_note: ClassVar[str] = (
        "it projects the whole gradient in before_step, and under DeepSpeed the engine reduces, clips and "
        "applies the gradient inside backward (ZeRO keeps it partitioned in its own buffers), so no hook sees it"
    )

    def __init__(self, params: AGEMParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.memory = Replay(ReplayParams(buffer_size=self.params.memory_size), seed=seed)  # type: ignore[attr-defined]
        self.rng = np.random.default_rng([seed, 15485863])
        self.projections = 0
        self.steps = 0
        self.last_dot_after: float | None = None

    def after_stage(self, ctx: StageContext) -> None:
        self.memory.after_stage(ctx)

    def before_step(self, ctx: StageContext) -> None:
        from lifelong.data.collate import collate

        buf = self.memory.buffer
        if not buf:
            return
        self.steps += 1
        params = [p for p in trainable(ctx.model).values()]
        g = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        k = min(self.params.sample_size, len(buf))  # type: ignore[attr-defined]
        picks = [buf[int(i)] for i in self.rng.choice(len(buf), size=k, replace=False)]
        pad = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else 0
        batch = collate(picks, pad, ctx.device or params[0].device)
        for p in params:
            p.grad = None
        ctx.model(**batch).loss.backward()  # the unwrapped module: no DDP all-reduce, same on every process
        reshard(ctx.model)
        g_ref = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in params]
        dot = _dot(g, g_ref)
        if dot < 0:
            ref_sq = _dot(g_ref, g_ref)
            coef = dot / max(ref_sq, 1e-30)
            g = [a - coef * b for a, b in zip(g, g_ref)]
            self.projections += 1
        self.last_dot_after = _dot(g, g_ref)
        for p, a in zip(params, g):
            p.grad = a

    def cost(self) -> dict[str, Any]:
        return {"memory_examples": len(self.memory.buffer), "projected_steps": self.projections}

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.state_dict(),
            "rng": self.rng.bit_generator.state,
            "projections": self.projections,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.memory.load_state_dict(state["memory"])
        self.rng.bit_generator.state = state["rng"]
        self.projections, self.steps = int(state["projections"]), int(state["steps"])
