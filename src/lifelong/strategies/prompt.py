"""Per-stage soft prompts: prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient
Prompt Tuning") made continual as Progressive Prompts (Razdaibiedina et al. 2023, ICLR).

Stage k learns a new soft prompt P_k (n_tokens x hidden) prepended to the input together with every earlier
prompt, newest first: [P_k; P_{k-1}; ...; P_1; x]. The base model and the earlier prompts are frozen, so a
task's own prompt sequence never changes after its stage. Evaluation of stage j's task uses [P_j..P_1]
(`router: task`, the paper's setting, no forgetting by construction) or all prompts (`router: all`, no stage
identity needed). New prompts start from embeddings of random vocabulary tokens (Lester et al.). The paper's
residual MLP re-parameterisation is not used.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import full_tensor


class SoftPromptModel(torch.nn.Module):
    """A causal LM with soft prompts prepended to every input (outputs cover the real tokens only)."""

    def __init__(self, base: Any) -> None:
        super().__init__()
        self.base = base
        self.prompts = torch.nn.ParameterList()
        self.active: Optional[int] = None  # use prompts[:active] (None: all)

    @property
    def config(self) -> Any:
        return self.base.config

    @property
    def _no_split_modules(self) -> Any:
        """The base's decoder-layer classes: accelerate's FSDP2 wrap policy gives each layer its own group."""
        return getattr(self.base, "_no_split_modules", None)

    @property
    def generation_config(self) -> Any:
        return self.base.generation_config

    def gradient_checkpointing_enable(self, **kw: Any) -> None:
        self.base.gradient_checkpointing_enable(**kw)

    def gradient_checkpointing_disable(self) -> None:
        self.base.gradient_checkpointing_disable()

    def prefix(self) -> Optional[torch.Tensor]:
        used = list(self.prompts)[: self.active] if self.active is not None else list(self.prompts)
        return torch.cat(used[::-1], 0) if used else None  # newest first

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        past_key_values: Any = None,
        position_ids: Optional[torch.Tensor] = None,
        **kw: Any,
    ) -> Any:
        pre = self.prefix()
        n = 0 if pre is None else pre.shape[0]
        b = input_ids.shape[0]
        cached = past_key_values is not None and past_key_values.get_seq_length() > 0
        if attention_mask is not None and n:
            attention_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], 1)
        if position_ids is not None and n:
            position_ids = position_ids + n
        if cached or n == 0:
            return self.base(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                past_key_values=past_key_values,
                position_ids=position_ids,
                **kw,
            )
        emb = self.base.get_input_embeddings()(input_ids)
        emb = torch.cat([pre.to(emb.dtype)[None].expand(b, -1, -1), emb], 1)  # type: ignore[union-attr]
        if labels is not None:
            labels = torch.cat([labels.new_full((b, n), -100), labels], 1)
        out = self.base(
            inputs_embeds=emb,
            attention_mask=attention_mask,
            labels=labels,
            past_key_values=past_key_values,
            position_ids=position_ids,
            **kw,
        )
        out.logits = out.logits[:, n:]
        return out

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kw: Any
    ) -> torch.Tensor:
        from torch.distributed.fsdp import FSDPModule

        if isinstance(self, FSDPModule):  # sharded: generation calls the base directly, not this module's
            self.unshard()  # forward, so the prompts (this module's own group) are gathered here
            try:
                return self._generate(input_ids, attention_mask, **kw)
            finally:
                for m in self.modules():
                    if isinstance(m, FSDPModule):
                        m.reshard()
        return self._generate(input_ids, attention_mask, **kw)

    def _generate(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, **kw: Any
    ) -> torch.Tensor:
        pre = self.prefix()
        if pre is None:
            return self.base.generate(input_ids=input_ids, attention_mask=attention_mask, **kw)
        b, n = input_ids.shape[0], pre.shape[0]
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        emb = torch.cat(
            [pre[None].expand(b, -1, -1).to(self.base.dtype), self.base.get_input_embeddings()(input_ids)], 1
        )
        mask = torch.cat([mask.new_ones(b, n), mask], 1)
        new = self.base.generate(inputs_embeds=emb, attention_mask=mask, **kw)
        return torch.cat([input_ids, new.to(input_ids.device)], 1)  # like generate(input_ids=...)


class PromptParams(Strict):
    n_tokens: int = Field(default=10, ge=1)
    """Soft-prompt length per stage (Progressive Prompts uses 10 per task)."""
    router: Literal["task", "all"] = "task"
    """Evaluate a stage's task with the prompts up to that stage (`task`) or with all prompts (`all`)."""


@STRATEGIES.register("prompt")
class Prompt(Strategy):
    """Progressive soft prompts: a new prompt per stage, earlier prompts and the base frozen."""

    Params = PromptParams
    exports_hf = False
    export_note = "soft prompts are prepended embeddings, which no Hugging Face or PEFT model directory holds"
    supports_fsdp = True  # the prompts are sharded with the base (the loop re-shards it as prompts are added)

    def __init__(self, params: PromptParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.stages = 0
        self.needs_task_identity = self.params.router == "task"  # type: ignore[attr-defined,misc]

    def _new_prompt(self, model: SoftPromptModel, k: int) -> torch.nn.Parameter:
        emb = model.base.get_input_embeddings().weight
        rng = np.random.default_rng([self.seed, k, 982451653])
        idx = torch.as_tensor(rng.integers(emb.shape[0], size=self.params.n_tokens))  # type: ignore[attr-defined]
        whole = full_tensor(emb.detach())  # sharded: the whole table (a collective), the rows picked from it
        return torch.nn.Parameter(whole[idx.to(whole.device)].detach().clone())

    def wrap_model(self, ctx: StageContext) -> Any:
        model = ctx.model
        if not isinstance(model, SoftPromptModel):
            for q in model.parameters():
                q.requires_grad_(False)
            model = SoftPromptModel(model)
        want = self.stages if ctx.resuming else max(self.stages, ctx.stage_index + 1)
        while len(model.prompts) < want:
            model.prompts.append(self._new_prompt(model, len(model.prompts)))
        self.stages = want
        model.active = None
        for i, q in enumerate(model.prompts):
            q.requires_grad_(not ctx.resuming and i == len(model.prompts) - 1 or ctx.resuming and i == want - 1)
        return model

    def after_stage(self, ctx: StageContext) -> None:
        for q in ctx.model.prompts:
            q.requires_grad_(False)

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        model = ctx.model
        if isinstance(model, SoftPromptModel):
            if self.params.router == "task" and ctx.task_stage is not None:  # type: ignore[attr-defined]
                model.active = min(ctx.task_stage + 1, len(model.prompts))
            else:
                model.active = None
        return model

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        return {n for n in model.state_dict() if n.startswith("prompts.")}

    def state_dict(self) -> dict[str, Any]:
        return {"stages": self.stages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stages = int(state.get("stages", 0))
