"""O-LoRA: Orthogonal subspace learning for language model continual learning (Wang et al. 2023, EMNLP
Findings).

Each stage learns a new LoRA adapter while the earlier ones stay active and frozen. The new adapter's
down-projection A_t (r x d) is pushed orthogonal to the earlier ones (paper eq. 5-6), and the new LoRA is
kept small with an L2 term:

    L = L_task + lambda1 * sum_layers sum_{s<t} || A_s A_t^T ||_1  +  lambda2 * || LoRA_t ||_2^2

(||.||_1: sum of absolute entries of the r_s x r_t overlap). Inference uses all adapters at once, so no
stage identity is needed. Defaults from the paper: r 8, alpha 32, lambda1 0.5, on the attention q and v
projections (`attention` in the per-architecture module map).

Sharded (FSDP2): the adapters are shards outside the forward pass, so the penalty is not built as a graph;
its exact gradient is added in `before_step` instead: lambda1 * sum_{s<t} sign(A_s A_t^T)^T A_s for A_t
(whole A matrices gathered, r x d each; the frozen A_s once per stage) and 2 lambda2 theta_t, each process
adding its shard of it, which equals the gradient of the penalty in one process.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StageContext, Strategy
from lifelong.strategies.lora import adapter_params, add_adapter, export_adapter, is_peft, lora_tensors, train_only
from lifelong.train.sharding import full_tensor, is_sharded, local_tensor, shard_like


class OLoRAParams(Strict):
    r: int = Field(default=8, ge=1)
    """LoRA rank of every stage's adapter."""
    alpha: float = Field(default=32.0, gt=0)
    """LoRA alpha."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: Union[list[str], str] = "attention"
    """Adapted modules (default: the attention q and v projections, as in the paper)."""
    lambda1: float = Field(default=0.5, ge=0)
    """Weight of the orthogonality loss between the new and the earlier adapters' A matrices."""
    lambda2: float = Field(default=0.0, ge=0)
    """Weight of the L2 penalty on the new adapter's parameters."""


def a_matrices(model: Any, name: str) -> dict[str, torch.Tensor]:
    """lora_A weights of adapter `name` by module path (r x d each)."""
    out = {}
    for n, q in model.named_parameters():
        if f"lora_A.{name}." in n:
            out[n.replace(f"lora_A.{name}.", "lora_A.*.")] = q
    return out


@STRATEGIES.register("olora")
class OLoRA(Strategy):
    """O-LoRA: a new LoRA per stage, orthogonal to the frozen earlier ones, all active at inference."""

    Params = OLoRAParams
    exports_peft = True  # a stage's model: the base plus every adapter so far (exported concatenated)
    supports_fsdp = True  # sharded: the penalty's gradient is added in before_step (module doc)
    deepspeed_note: ClassVar[str] = (
        "its orthogonality penalty's gradient is added in before_step, and under DeepSpeed the engine applies "
        "the gradient inside backward, so no hook sees it"
    )

    def __init__(self, params: OLoRAParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.adapters: list[str] = []

    def wrap_model(self, ctx: StageContext) -> Any:
        model = ctx.model
        for name in self.adapters:
            model = add_adapter(model, name, self.params)
        if ctx.resuming:
            if self.adapters:
                train_only(model, list(self.adapters), self.adapters[-1])
            return model
        name = f"stage{ctx.stage_index}"
        model = add_adapter(model, name, self.params)
        if name not in self.adapters:
            self.adapters.append(name)
        train_only(model, list(self.adapters), name)  # earlier adapters active but frozen
        return model

    def overlap(self, model: Any) -> Optional[torch.Tensor]:
        """sum_layers sum_{s<t} |A_s A_t^T|_1 for the newest adapter t."""
        if len(self.adapters) < 2:
            return None
        new = a_matrices(model, self.adapters[-1])
        total = None
        for old_name in self.adapters[:-1]:
            old = a_matrices(model, old_name)
            for k, a_t in new.items():
                term = (old[k].detach() @ a_t.T).abs().sum()
                total = term if total is None else total + term
        return total

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        p: OLoRAParams = self.params  # type: ignore[assignment]
        if (p.lambda1 or p.lambda2) and is_sharded(ctx.model):
            return None  # its gradient is added in before_step (module doc)
        terms: list[torch.Tensor] = []
        ov = self.overlap(ctx.model) if p.lambda1 else None
        if ov is not None:
            terms.append(p.lambda1 * ov)
        if p.lambda2 and self.adapters:
            terms.append(
                p.lambda2
                * sum(
                    (q**2).sum()
                    for q in adapter_params(ctx.model, self.adapters[-1]).values()  # type: ignore[arg-type]
                )
            )
        return sum(terms[1:], terms[0]) if terms else None

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        p: OLoRAParams = self.params  # type: ignore[assignment]
        if not (p.lambda1 or p.lambda2) or not self.adapters or not is_sharded(ctx.model):
            return
        model, name = ctx.model, self.adapters[-1]
        if p.lambda1 and len(self.adapters) > 1:
            key = (ctx.stage_index, tuple(self.adapters))
            if getattr(self, "_old_key", None) != key:  # the frozen A_s, whole, once per stage (a collective)
                self._old = [
                    {k: full_tensor(a.detach()).float() for k, a in a_matrices(model, s).items()}
                    for s in self.adapters[:-1]
                ]
                self._old_key = key
            for k, a_t in a_matrices(model, name).items():
                whole = full_tensor(a_t.detach()).float()  # r x d (a collective)
                g = sum(torch.sign(old[k] @ whole.T).T @ old[k] for old in self._old)
                if a_t.grad is not None:
                    local_tensor(a_t.grad).add_(local_tensor(shard_like(p.lambda1 * g, a_t.detach())))  # type: ignore[arg-type]
        if p.lambda2:
            for q in adapter_params(model, name).values():
                if q.grad is not None:
                    local_tensor(q.grad).add_(local_tensor(q.detach()), alpha=2 * p.lambda2)

    def after_stage(self, ctx: StageContext) -> None:
        name = self.adapters[-1]
        for q in adapter_params(ctx.model, name).values():
            q.requires_grad_(False)
        export_adapter(ctx.model, name, ctx.run_dir, acc=ctx.accelerator)

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        model = ctx.model
        if is_peft(model) and self.adapters:
            model.base_model.enable_adapter_layers()
            model.base_model.set_adapter(list(self.adapters) if len(self.adapters) > 1 else self.adapters[0])
        for n, q in model.named_parameters():  # PEFT's set_adapter marks active adapters trainable
            if "lora_" in n:
                q.requires_grad_(False)
        return model

    def export_adapters(self, ctx: StageContext) -> list[str]:
        return [a for a in self.adapters if int(a.removeprefix("stage")) <= ctx.stage_index]

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        return lora_tensors(model)

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": list(self.adapters)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters = list(state.get("adapters", []))
