"""LoRAMoE: a mixture of LoRA experts with a learned router in the feed-forward layers (Huang et al. 2024,
"LoRAMoE: Alleviating World Knowledge Forgetting in Large Language Models via MoE-Style Plugin", ACL).

Each feed-forward linear map W0 (frozen) becomes

    y = W0 x + (alpha / r) * sum_e g_e(x) B_e A_e x,     g(x) = softmax(W_router x)

with the LoRA experts (A_e, B_e) and the router trained. The router's balance term is the squared
coefficient of variation of the experts' importance (the sum of their gates over the batch's tokens), per
layer (Shazeer et al. 2017, the balance constraint LoRAMoE localises): `balance * mean_layers CV(I)^2`. The
importance counts the batch's real tokens (padding, whose amount depends on how a batch is cut, is left out).

`experts: fixed` trains `n_experts` experts through all stages. `experts: per_stage` adds `n_experts` new
experts at every stage and freezes the earlier ones; the router grows and stays trainable, so it learns
to send the new stage's tokens to its experts. B starts at zero, so adding experts leaves the model's
function unchanged.

With several processes the importance is summed over every process's tokens before the CV is taken (a
differentiable all-reduce: its backward sums the processes' gradients, which the gradient averaging then
divides back), so the balance term and its gradient are one process's over the whole batch.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import full_tensor


class MoELoRALinear(torch.nn.Module):
    """A frozen linear map (nn.Linear, or GPT-2's Conv1D) plus gated LoRA experts."""

    def __init__(self, base: torch.nn.Module, r: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        w: torch.Tensor = base.weight  # type: ignore[assignment]
        transposed = type(base).__name__ == "Conv1D"  # GPT-2 stores (in, out)
        self.d_in, self.d_out = (int(w.shape[0]), int(w.shape[1])) if transposed else (int(w.shape[1]), int(w.shape[0]))
        self.r, self.scale = r, alpha / r
        self.A = torch.nn.ParameterList()
        self.B = torch.nn.ParameterList()
        self.router = torch.nn.Parameter(torch.zeros(0, self.d_in, device=w.device, dtype=w.dtype))
        self.last_importance: Optional[torch.Tensor] = None
        self.last_gates: Optional[torch.Tensor] = None
        """The last forward pass's gates per token (..., E), for a balance term over real tokens only."""

    def add_experts(self, n: int, generator: torch.Generator) -> None:
        w: torch.Tensor = self.base.weight  # type: ignore[assignment]
        for _ in range(n):
            a = torch.empty(self.r, self.d_in, dtype=w.dtype)
            torch.nn.init.kaiming_uniform_(a, a=5**0.5, generator=generator)
            self.A.append(torch.nn.Parameter(a.to(w.device)))
            self.B.append(torch.nn.Parameter(torch.zeros(self.d_out, self.r, device=w.device, dtype=w.dtype)))
        new_rows = torch.randn(n, self.d_in, generator=generator, dtype=w.dtype).to(w.device) * 0.01
        old = full_tensor(self.router.detach())  # whole rows of a sharded router (a collective), then a plain
        self.router = torch.nn.Parameter(torch.cat([old.to(new_rows.device), new_rows], 0))  # one to be sharded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not len(self.A):
            return y
        gates = torch.softmax(x @ self.router.T, dim=-1)  # (..., E)
        self.last_gates = gates
        self.last_importance = gates.reshape(-1, gates.shape[-1]).sum(0)
        A = torch.stack(list(self.A))  # (E, r, in)
        B = torch.stack(list(self.B))  # (E, out, r)
        h = torch.einsum("...i,eri->...er", x, A)
        out = torch.einsum("...er,eor->...eo", h, B)
        return y + self.scale * (gates.unsqueeze(-1) * out).sum(-2)


class LoRAMoEParams(Strict):
    n_experts: int = Field(default=4, ge=1)
    """Experts per layer (fixed), or experts added per stage (per_stage)."""
    experts: Literal["fixed", "per_stage"] = "per_stage"
    """A fixed set of experts trained throughout, or new experts per stage with earlier ones frozen."""
    r: int = Field(default=8, ge=1)
    """Rank of every expert."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator."""
    balance: float = Field(default=0.01, ge=0)
    """Weight of the router's balance term (squared coefficient of variation of expert importance)."""
    target_modules: Union[str, list[str]] = "mlp"
    """`mlp` (the architecture's feed-forward projections, from the module map) or module name suffixes."""


def moe_layers(model: Any) -> list[MoELoRALinear]:
    return [m for m in model.modules() if isinstance(m, MoELoRALinear)]


@STRATEGIES.register("lora_moe")
class LoRAMoE(Strategy):
    """LoRAMoE: LoRA experts with a learned router in the feed-forward layers, plus a balance term."""

    Params = LoRAMoEParams
    exports_hf = False
    export_note = "gated LoRA experts depend on the input through the router, so they cannot be merged into the weights"
    fsdp_note = (
        "experts: per_stage grows every layer's router at each stage (a new, larger tensor in place of the "
        "sharded one), which FSDP2 cannot take over; use experts: fixed"
    )
    """Sharded runs take `experts: fixed` (`supports_fsdp` is set per instance)."""

    def __init__(self, params: LoRAMoEParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.groups = 0  # how many times experts were added
        self.supports_fsdp = self.params.experts == "fixed"  # type: ignore[attr-defined,misc]

    def _install(self, model: Any) -> list[MoELoRALinear]:
        from lifelong.models.arch import arch_of

        p: LoRAMoEParams = self.params  # type: ignore[assignment]
        layers = moe_layers(model)
        if layers:
            return layers
        for q in model.parameters():
            q.requires_grad_(False)
        suffixes = arch_of(model)["mlp"] if p.target_modules == "mlp" else list(p.target_modules)
        targets = [
            (n, m)
            for n, m in model.named_modules()
            if any(n == s or n.endswith("." + s) for s in suffixes) and hasattr(m, "weight")
        ]
        if not targets:
            raise ValueError(f"lora_moe: no module matches {suffixes}; set target_modules")
        for name, mod in targets:
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], MoELoRALinear(mod, p.r, p.alpha))
        return moe_layers(model)

    def _add_group(self, layers: list[MoELoRALinear], group: int) -> None:
        g = torch.Generator().manual_seed(self.seed * 1000 + group)
        for layer in layers:
            layer.add_experts(self.params.n_experts, g)  # type: ignore[attr-defined]

    def wrap_model(self, ctx: StageContext) -> Any:
        p: LoRAMoEParams = self.params  # type: ignore[assignment]
        model = ctx.model
        layers = self._install(model)
        have = len(layers[0].A) // p.n_experts
        want = (
            self.groups
            if ctx.resuming
            else (max(self.groups, ctx.stage_index + 1) if p.experts == "per_stage" else max(self.groups, 1))
        )
        for g in range(have, want):
            self._add_group(layers, g)
        self.groups = want
        for layer in layers:
            layer.router.requires_grad_(True)
            for e in range(len(layer.A)):
                live = p.experts == "fixed" or e >= (want - 1) * p.n_experts
                layer.A[e].requires_grad_(live)
                layer.B[e].requires_grad_(live)
        return model

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        p: LoRAMoEParams = self.params  # type: ignore[assignment]
        if not p.balance:
            return None
        terms = []
        acc = ctx.accelerator
        world = acc.num_processes if acc is not None else 1
        mask = batch.get("attention_mask")
        for layer in moe_layers(ctx.model):
            imp, gates = layer.last_importance, layer.last_gates
            if gates is not None and mask is not None and tuple(gates.shape[:-1]) == tuple(mask.shape):
                imp = (gates * mask[..., None].to(gates.dtype)).reshape(-1, gates.shape[-1]).sum(0)  # no padding
            if imp is not None and imp.numel() > 1:
                if world > 1:  # the importance of every process's tokens (see the module doc)
                    from torch.distributed.nn.functional import all_reduce

                    imp = all_reduce(imp)
                terms.append(imp.var() / imp.mean().clamp(min=1e-9) ** 2)
        return p.balance * torch.stack(terms).mean() if terms else None

    def importance_cv(self, model: Any) -> float:
        vals = [
            float(m.last_importance.std() / m.last_importance.mean())
            for m in moe_layers(model)
            if m.last_importance is not None
        ]
        return sum(vals) / max(len(vals), 1)

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        return {
            f"{name}.{p}"
            for name, m in model.named_modules()
            if isinstance(m, MoELoRALinear)
            for p, _ in m.named_parameters()
            if not p.startswith("base.")
        }

    def state_dict(self) -> dict[str, Any]:
        return {"groups": self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.groups = int(state.get("groups", 0))
