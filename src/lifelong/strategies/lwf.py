"""Learning without Forgetting (Li and Hoiem 2017, "Learning without Forgetting", TPAMI), for language models.

While training a stage, the model as it was at the start of the stage (the teacher, frozen) scores the
current inputs, and the student is pulled toward the teacher's output distribution:

    L = L_new + weight * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )

averaged over the distilled token positions (the response tokens by default), as in Hinton et al.'s
distillation with temperature T. With several processes the mean is over every process's positions (each
process's sum divided by the global count), so the averaged gradients are one process's. One teacher copy is
held, only during a stage; when the student is a PEFT model, the teacher is the same module with its adapters
disabled (no copy at all).

Sharded (FSDP2): the teacher is a frozen twin sharded like the student (`_frozen.frozen_copy`: 1/N of a
model per process), its forward pass a collective every process runs on its own micro-batch, as the
student's; its logits equal the unsharded teacher's. A checkpoint holds its whole state dict.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._frozen import frozen_copy
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import full_state_dict, is_sharded


class LwFParams(Strict):
    weight: float = Field(default=1.0, ge=0)
    """Weight of the distillation term."""
    temperature: float = Field(default=2.0, gt=0)
    """Softmax temperature T of teacher and student (the term is scaled by T^2)."""
    positions: Literal["response", "all"] = "response"
    """Distil on the response tokens only, or on every non-padding position."""


def _is_peft(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


@STRATEGIES.register("lwf")
class LwF(Strategy):
    """Learning without Forgetting: distil the previous stage's model on the current inputs."""

    Params = LwFParams
    supports_fsdp = True
    supports_deepspeed = True  # the teacher is a plain frozen copy; the KL is a penalty

    def __init__(self, params: LwFParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.teacher: Optional[torch.nn.Module] = None
        self._pending: Optional[dict[str, torch.Tensor]] = None  # teacher weights restored on resume

    def before_stage(self, ctx: StageContext) -> None:
        if ctx.stage_index == 0 or _is_peft(ctx.model):
            self.teacher = None
            return
        self.teacher = frozen_copy(ctx.model)

    def _teacher_logits(self, ctx: StageContext, batch: dict) -> Optional[torch.Tensor]:
        if self._pending is not None:
            self.teacher = frozen_copy(ctx.model, self._pending)
            self._pending = None
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            if self.teacher is not None:
                return self.teacher(**inputs).logits
            if ctx.stage_index > 0 and _is_peft(ctx.model):
                with ctx.model.disable_adapter():
                    return ctx.model(**inputs).logits
        return None

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        t_logits = self._teacher_logits(ctx, batch)
        if t_logits is None:
            return None
        p: LwFParams = self.params  # type: ignore[assignment]
        T = p.temperature
        # position t predicts token t+1: distil where token t+1 is a response token (or any real token)
        if p.positions == "response":
            mask = batch["labels"][:, 1:] != -100
        else:
            mask = batch["attention_mask"][:, 1:].bool()
        s = out.logits[:, :-1][mask].float() / T
        t = t_logits[:, :-1][mask].float() / T
        acc = ctx.accelerator
        world = acc.num_processes if acc is not None else 1
        if world > 1:  # the mean over every process's positions, as one process would take it (the
            n_all = acc.reduce(mask.sum().detach().clone(), "sum")  # gradients are averaged over processes)
            if s.numel() == 0:
                return None
            kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum")
            return p.weight * T * T * kl * world / n_all.clamp(min=1)
        if s.numel() == 0:
            return None
        kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
        return p.weight * T * T * kl

    def after_stage(self, ctx: StageContext) -> None:
        self.teacher = None
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        if self.teacher is not None:
            if is_sharded(self.teacher):  # whole tensors on the main process (a collective)
                return {"teacher": full_state_dict(self.teacher)}
            return {"teacher": {k: v for k, v in self.teacher.state_dict().items()}}
        return {"teacher": self._pending} if self._pending else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher = None
        self._pending = dict(state["teacher"]) if state.get("teacher") else None
