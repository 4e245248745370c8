"""The strategy interface and `Compose`.

Hook order in a trainable stage: `before_stage` -> for every micro-batch `batches` (a generator wrapping
the stage's global micro-batches, e.g. replay mixing) and `penalty` (added to the loss) -> `before_step`
(after backward, before the optimizer step: gradient projection) -> `after_stage`. `eval_model` picks the
model used to score a task. On resume inside a stage, `before_stage` is not called again: everything it
computed must be in `state_dict()`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Iterator, Optional

import torch
from pydantic import BaseModel

from lifelong.config import Strict
from lifelong.train.context import StageContext

__all__ = ["Compose", "NoParams", "StageContext", "Strategy"]


class NoParams(Strict):
    """A method without parameters."""


READS_WHOLE_WEIGHTS = (
    "its penalty reads every trained weight whole at each step, and ZeRO-3 holds the weights in partitions "
    "outside the engine's own forward; use ZeRO-2"
)
"""The ZeRO-3 refusal of a strategy whose penalty reads whole weights while training (`zero3_note`)."""


class Strategy:
    """Base class; every hook is a no-op. Subclasses set `Params` and capability flags."""

    Params: ClassVar[type[BaseModel]] = NoParams
    needs_task_identity: ClassVar[bool] = False
    """Needs to know which stage an eval example belongs to at inference."""
    supports_distributed: ClassVar[bool] = True
    """Correct under DDP (`accelerate launch`): hooks see the same data and act the same on every process."""
    supports_fsdp: ClassVar[bool] = False
    """Tested under sharded parameters (FSDP2): its hooks give the one-process result when every parameter is
    a `DTensor` shard (tests/test_sharded_strategies.py). A sharded run refuses a strategy without it."""
    fsdp_note: ClassVar[str] = ""
    """Why it cannot run sharded (said when a sharded run refuses it); empty when `supports_fsdp`."""
    supports_deepspeed: ClassVar[bool] = False
    """Tested under DeepSpeed ZeRO-2 (`accelerate launch` with a DeepSpeed config; tests/test_deepspeed.py):
    its hooks give the one-process results when the engine reduces, clips and steps inside backward (no
    gradient reaches `before_step`, which the loop then skips; see `StageContext.engine_steps`) and keeps
    its own fp32 master weights during a stage. A DeepSpeed run refuses a strategy without it."""
    deepspeed_note: ClassVar[str] = ""
    """Why it cannot run under DeepSpeed (said when a DeepSpeed run refuses it); empty when `supports_deepspeed`."""
    zero3_note: ClassVar[str] = ""
    """Why it cannot run under ZeRO-3 although it runs under ZeRO-2 (e.g. `READS_WHOLE_WEIGHTS`); empty: no
    difference between the two."""
    stores_examples: ClassVar[bool] = False
    """Keeps training examples of earlier stages (privacy / storage relevant)."""
    exports_hf: ClassVar[bool] = True
    """Its stage models are plain transformers models (adapters merged in): `export.format: hf` works."""
    exports_peft: ClassVar[bool] = False
    """Its stage models are PEFT adapters on the unchanged base (`export.format: peft`); `export_adapters`
    names them."""
    export_note: ClassVar[str] = ""
    """Why an export format it lacks cannot hold its models (said when a config asks for one)."""

    def __init__(self, params: Optional[BaseModel] = None, seed: int = 0) -> None:
        self.params = params if params is not None else self.Params()
        self.seed = seed

    def fsdp_refusal(self) -> str:
        """Why this strategy, with its parameters, cannot run sharded, or "" when it can (default: from
        `supports_fsdp` and `fsdp_note`; a strategy whose parameters decide overrides it)."""
        if self.supports_fsdp:
            return ""
        return self.fsdp_note or f"{type(self).__name__} is not tested with sharded parameters"

    def deepspeed_refusal(self, zero_stage: int = 2) -> str:
        """Why this strategy, with its parameters, cannot run under DeepSpeed ZeRO stage `zero_stage` (2 or 3),
        or "" when it can (from `supports_deepspeed` and `deepspeed_note`; a strategy that reads whole weights
        while training overrides it for ZeRO-3)."""
        if self.supports_deepspeed:
            return self.zero3_note if zero_stage == 3 else ""
        return self.deepspeed_note or f"{type(self).__name__} is not tested under DeepSpeed"

    def wrap_model(self, ctx: StageContext) -> Any:
        """Change the model's structure (add adapters, soft prompts) before stage `ctx.stage_index` trains,
        and, with `ctx.resuming`, rebuild the structure a checkpoint was saved with (called after
        `load_state_dict`, before the weights load). Returns the model to use from now on."""
        return ctx.model

    def before_stage(self, ctx: StageContext) -> None:
        return None

    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        return it

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        return None

    def before_step(self, ctx: StageContext) -> None:
        return None

    def after_stage(self, ctx: StageContext) -> None:
        return None

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        return ctx.model

    def cost(self) -> dict[str, Any]:
        """Extra cost figures for the run's cost table (e.g. stored examples)."""
        return {}

    def export_adapters(self, ctx: StageContext) -> list[str]:
        """The PEFT adapters that make up the model of stage `ctx.stage_index` (exported as one adapter,
        several concatenated); empty: the model as it is."""
        return []

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        """State-dict names of the tensors this strategy adds and trains when it never changes the starting
        weights (adapters, soft prompts). Checkpoints then hold only these, plus a digest of the rest, which
        is the starting model reloaded from the config. None: any weight may change (full checkpoints)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class Compose(Strategy):
    """Run several strategies: batches chained, penalties summed, hooks in order."""

    def __init__(self, parts: list[Strategy]) -> None:
        super().__init__(NoParams())
        self.parts = parts
        self.needs_task_identity = any(p.needs_task_identity for p in parts)  # type: ignore[misc]
        self.supports_distributed = all(p.supports_distributed for p in parts)  # type: ignore[misc]
        self.supports_fsdp = all(not p.fsdp_refusal() for p in parts)  # type: ignore[misc]
        self.fsdp_note = "; ".join(  # type: ignore[misc]
            f"{type(p).__name__}: {r}" for p, r in ((p, p.fsdp_refusal()) for p in parts) if r
        )
        self.exports_hf = all(p.exports_hf for p in parts)  # type: ignore[misc]
        self.exports_peft = self.exports_hf and any(p.exports_peft for p in parts)  # type: ignore[misc]
        self.export_note = next((p.export_note for p in parts if p.export_note), "")  # type: ignore[misc]

    def fsdp_refusal(self) -> str:
        return self.fsdp_note

    def deepspeed_refusal(self, zero_stage: int = 2) -> str:
        return "; ".join(f"{type(p).__name__}: {r}" for p in self.parts if (r := p.deepspeed_refusal(zero_stage)))

    def wrap_model(self, ctx: StageContext) -> Any:
        model = ctx.model
        for p in self.parts:
            model = p.wrap_model(replace(ctx, model=model))
        return model

    def before_stage(self, ctx: StageContext) -> None:
        for p in self.parts:
            p.before_stage(ctx)

    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        for p in self.parts:
            it = p.batches(ctx, it)
        return it

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        terms = [t for t in (p.penalty(ctx, batch, out) for p in self.parts) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def before_step(self, ctx: StageContext) -> None:
        for p in self.parts:
            p.before_step(ctx)

    def after_stage(self, ctx: StageContext) -> None:
        for p in self.parts:
            p.after_stage(ctx)

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        model = ctx.model
        for p in self.parts:
            chosen = p.eval_model(ctx, task)
            if chosen is not ctx.model:
                model = chosen
        return model

    def cost(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.parts:
            out.update(p.cost())
        return out

    def export_adapters(self, ctx: StageContext) -> list[str]:
        return [a for p in self.parts for a in p.export_adapters(ctx)]

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        sets = [t for t in (p.trained_tensors(model) for p in self.parts) if t is not None]
        return set().union(*sets) if sets else None

    def state_dict(self) -> dict[str, Any]:
        return {str(i): p.state_dict() for i, p in enumerate(self.parts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, p in enumerate(self.parts):
            p.load_state_dict(state.get(str(i), {}))
