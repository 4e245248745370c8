"""Experience replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning"; reservoir
sampling after Vitter 1985).

A bounded buffer holds tokenized examples of all earlier stages, filled by reservoir sampling over every
example seen so far (each seen example is in the buffer with equal probability), or with an equal quota per
stage. During a stage, replayed examples make up `fraction` of the examples seen. The fraction is realized
by a running budget carried across micro-batches, never by rounding per batch, so 1% replay at batch 32
replays one example about every third batch instead of none.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StageContext, Strategy


class ReplayParams(Strict):
    buffer_size: int = Field(default=1000, ge=1)
    """Maximum number of stored examples over all earlier stages."""
    fraction: float = Field(default=0.2, gt=0, lt=1)
    """Share of the examples trained on in a stage that come from the buffer."""
    per_stage_quota: bool = False
    """Split the buffer equally among earlier stages (each keeps its own reservoir) instead of one
    reservoir over all examples seen (which favours long stages)."""
    draw: Literal["random", "in_order"] = "random"
    """Draw replayed examples uniformly from the buffer, or in order, cycling through it (the continual
    pre-training recipe of Ibrahim et al. 2024 replays old tokens in order)."""
    mix: Literal["replace", "append"] = "replace"
    """`replace`: replayed examples take the place of new ones (compute-equivalent, batch size fixed);
    `append`: they are added to the batch (the stage sees all its new data)."""


@STRATEGIES.register("replay")
class Replay(Strategy):
    """Experience replay from a reservoir-sampled buffer of earlier stages' examples."""

    Params = ReplayParams
    stores_examples = True
    supports_fsdp = True  # it only chooses examples (the same on every process); no parameter is touched
    supports_deepspeed = True  # it only chooses examples

    def __init__(self, params: ReplayParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.buffer: list[dict] = []  # {"input_ids", "labels", "stage"}
        self.seen = 0  # examples offered to the single reservoir
        self.seen_per_stage: dict[int, int] = {}
        self.credit = 0.0
        self.cursor = 0  # next buffer position for draw: in_order
        self.replayed = 0
        self.total = 0
        self.rng = np.random.default_rng([seed, 7919])

    # ---- buffer -------------------------------------------------------------------------------
    def _reservoir(self, items: list[dict], capacity: int, seen: int, new: Iterable[dict]) -> int:
        """Vitter's algorithm R over `new`, in place on `items`; returns the updated seen count."""
        for ex in new:
            seen += 1
            if len(items) < capacity:
                items.append(ex)
            else:
                j = int(self.rng.integers(seen))
                if j < capacity:
                    items[j] = ex
        return seen

    def after_stage(self, ctx: StageContext) -> None:
        p: ReplayParams = self.params  # type: ignore[assignment]
        # a generator: a streamed corpus is offered to the reservoir block by block, never held whole
        new = (
            {"input_ids": list(e["input_ids"]), "labels": list(e["labels"]), "stage": ctx.stage_index}
            for e in ctx.examples
        )
        if not p.per_stage_quota:
            self.seen = self._reservoir(self.buffer, p.buffer_size, self.seen, new)
            return
        stages = sorted({e["stage"] for e in self.buffer} | {ctx.stage_index})
        quota = max(1, p.buffer_size // len(stages))
        kept: list[dict] = []
        for s in stages[:-1]:  # shrink earlier reservoirs to the new quota by uniform subsampling
            mine = [e for e in self.buffer if e["stage"] == s]
            if len(mine) > quota:
                idx = np.sort(self.rng.choice(len(mine), size=quota, replace=False))
                mine = [mine[i] for i in idx]
            kept += mine
        own: list[dict] = []
        self.seen_per_stage[ctx.stage_index] = self._reservoir(own, quota, 0, new)
        self.buffer = kept + own

    # ---- mixing -------------------------------------------------------------------------------
    def before_stage(self, ctx: StageContext) -> None:
        self.replayed = self.total = 0  # per-stage counters of the realized fraction

    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        p: ReplayParams = self.params  # type: ignore[assignment]
        for batch in it:
            b = len(batch)
            if self.buffer:
                # replace: r of b are replayed, r/b = f. append: r/(b+r) = f, so r = f/(1-f) * b.
                self.credit += p.fraction * b if p.mix == "replace" else p.fraction / (1 - p.fraction) * b
                r = min(math.floor(self.credit + 1e-9), b if p.mix == "replace" else 10 * b)
                self.credit -= r
                if r:
                    if p.draw == "in_order":
                        idx = [(self.cursor + k) % len(self.buffer) for k in range(r)]
                        self.cursor = (self.cursor + r) % len(self.buffer)
                    else:
                        idx = [int(i) for i in self.rng.integers(len(self.buffer), size=r)]
                    picks = [self.buffer[i] for i in idx]
                    picks = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in picks]
                    batch = batch[: b - r] + picks if p.mix == "replace" else batch + picks
                self.replayed += r
            self.total += len(batch)
            yield batch

    def realized_fraction(self) -> float:
        return self.replayed / self.total if self.total else 0.0

    def cost(self) -> dict[str, Any]:
        return {"replay_buffer_examples": len(self.buffer), "replayed_examples": self.replayed}

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer,
            "seen": self.seen,
            "seen_per_stage": {str(k): v for k, v in self.seen_per_stage.items()},
            "credit": self.credit,
            "replayed": self.replayed,
            "total": self.total,
            "rng": self.rng.bit_generator.state,
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.buffer = [dict(e) for e in state["buffer"]]
        self.seen = int(state["seen"])
        self.seen_per_stage = {int(k): int(v) for k, v in state["seen_per_stage"].items()}
        self.credit = float(state["credit"])
        self.replayed, self.total = int(state["replayed"]), int(state["total"])
        self.rng.bit_generator.state = state["rng"]
        self.cursor = int(state.get("cursor", 0))
