"""Sequential LoRA: one LoRA adapter (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models")
trained on every stage in turn, the "SeqLoRA" baseline of LoRA continual-learning papers (Wang et al. 2023,
"Orthogonal Subspace Learning for Language Model Continual Learning", EMNLP Findings: fixed-size LoRA
parameters trained on the task sequence, no new parameters per task).

The adapter is created at the first trainable stage; every later trainable stage continues training the
same adapter from where the previous one left it (never re-initialised, never merged: compose
`merge_after_stage` for that). The base stays frozen, so forgetting can only come from the adapter's
shared low-rank update being overwritten, which is what this baseline measures against per-stage adapters
(`lora`) and regularised ones (`olora`). Every eval task is scored with the adapter on, so no stage
identity is needed at inference. After each stage the adapter as it is then is exported in PEFT's format to
`<run>/adapters/stage<i>/` (loadable with `PeftModel.from_pretrained`).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StageContext, Strategy
from lifelong.strategies.lora import adapter_params, add_adapter, export_adapter, is_peft, lora_tensors, train_only

ADAPTER = "seq"
"""The PEFT name of the single adapter."""


class SeqLoRAParams(Strict):
    r: int = Field(default=8, ge=1)
    """LoRA rank."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator (the update is alpha / r * B A)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: Union[list[str], str] = "all-linear"
    """Modules that get the adapter: PEFT's `all-linear` (every linear layer but the output head),
    `attention` (the architecture's attention projections, from the module map), or a list of names."""


@STRATEGIES.register("seq_lora")
class SeqLoRA(Strategy):
    """One LoRA adapter on the frozen base, trained on every stage in turn and used for every eval task."""

    Params = SeqLoRAParams
    needs_task_identity = False
    supports_distributed = True  # hooks act only on local parameters; DDP averages the adapter's gradients
    exports_peft = True  # a stage's model: the base plus the one adapter as it was at the end of that stage
    supports_fsdp = True  # sharded with the base when first created; exported whole (gathered)
    supports_deepspeed = True  # adapters added between stages, on the plain model

    def __init__(self, params: SeqLoRAParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.trained: list[int] = []
        """Stages the adapter has finished training on, in order."""
        self.created = False
        """Whether the adapter exists (from the first trainable stage on; resume rebuilds it)."""

    def wrap_model(self, ctx: StageContext) -> Any:
        model = ctx.model
        if ctx.resuming and not self.created:  # checkpoint saved before the first trainable stage
            return model
        model = add_adapter(model, ADAPTER, self.params)  # idempotent: an existing adapter is kept as it is
        self.created = True
        train_only(model, [ADAPTER], ADAPTER)  # base frozen, the one adapter trains
        return model

    def after_stage(self, ctx: StageContext) -> None:
        for q in adapter_params(ctx.model, ADAPTER).values():
            q.requires_grad_(False)  # frozen between stages (evaluation, non-trainable stages)
        if ctx.stage_index not in self.trained:
            self.trained.append(ctx.stage_index)
        export_adapter(ctx.model, ADAPTER, ctx.run_dir, folder=f"stage{ctx.stage_index}", acc=ctx.accelerator)

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        model = ctx.model
        if not (self.created and is_peft(model)):
            return model  # baseline row, or stages before the first trainable one: the base model
        model.base_model.enable_adapter_layers()
        model.base_model.set_adapter(ADAPTER)
        for n, q in model.named_parameters():  # PEFT's set_adapter marks the active adapter trainable
            if "lora_" in n:
                q.requires_grad_(False)
        return model

    def export_adapters(self, ctx: StageContext) -> list[str]:
        return [ADAPTER] if self.created else []  # before the first trainable stage: the base

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        return lora_tensors(model)

    def state_dict(self) -> dict[str, Any]:
        return {"created": self.created, "trained": list(self.trained)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.created = bool(state.get("created", False))
        self.trained = [int(i) for i in state.get("trained", [])]
