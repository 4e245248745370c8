"""One LoRA adapter per stage on a frozen base (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large
Language Models"; per-task adapters as the architecture-based family of the continual-learning surveys).

Each stage trains a new PEFT LoRA adapter `stage<i>`; the base and all earlier adapters stay frozen, so what
earlier stages learned cannot be overwritten. Adapters are exported after their stage in PEFT's own format
(`<run>/adapters/stage<i>/`, loadable with `PeftModel.from_pretrained`).

Evaluation picks one adapter per eval task:
- `router: task` (task-aware): the adapter of the stage that owns the task; tasks of stages not trained
  yet, and general probes, use the base model (adapters disabled).
- `router: prototype` (task-agnostic, the stage is not known at inference): after each stage, the mean
  last-layer hidden state of the frozen base over the stage's training prompts is kept as its prototype;
  an eval task goes to the adapter whose prototype is nearest (cosine) to the mean representation of the
  task's prompts. Prompt perplexity is not used because adapters are trained with the loss on responses
  only, so they do not model their prompts. Routing is per eval task (its inputs are one distribution).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import full_tensor, is_sharded


class LoRAParams(Strict):
    r: int = Field(default=8, ge=1)
    """LoRA rank."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator (the update is alpha / r * B A)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: Union[list[str], str] = "all-linear"
    """Modules that get adapters: PEFT's `all-linear` (every linear layer but the output head),
    `attention` (the architecture's attention projections, from the module map), or a list of names."""
    router: Literal["task", "prototype"] = "task"
    """How an eval task picks its adapter: `task` (stage identity known) or `prototype` (inferred)."""
    prototype_examples: int = Field(default=64, ge=1)
    """Training examples per stage averaged into its prototype."""


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "base_model") and hasattr(model, "disable_adapter")


def lora_config(p: Any, model: Any) -> Any:
    from peft import LoraConfig

    from lifelong.models.arch import resolve_targets

    return LoraConfig(
        r=p.r,
        lora_alpha=p.alpha,
        lora_dropout=p.dropout,
        target_modules=resolve_targets(model, p.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_adapter(model: Any, name: str, p: Any) -> Any:
    """Add LoRA adapter `name` (a PeftModel is created on the first call). Idempotent."""
    from peft import get_peft_model

    if not is_peft(model):
        for q in model.parameters():
            q.requires_grad_(False)
        return get_peft_model(model, lora_config(p, model), adapter_name=name)
    if name not in model.peft_config:
        model.add_adapter(name, lora_config(p, model))
    return model


def lora_tensors(model: Any) -> set[str]:
    """State-dict names of every LoRA adapter tensor (what adapter strategies train; the base stays as loaded)."""
    return {n for n in model.state_dict() if "lora_" in n}


def adapter_params(model: Any, name: str) -> dict[str, torch.nn.Parameter]:
    return {n: q for n, q in model.named_parameters() if f".{name}." in n and "lora_" in n}


def train_only(model: Any, names: list[str], trainable: str) -> None:
    """Activate adapters `names` together; only `trainable`'s parameters get gradients."""
    model.base_model.enable_adapter_layers()
    model.base_model.set_adapter(names if len(names) > 1 else names[0])
    for n, q in model.named_parameters():
        q.requires_grad_("lora_" in n and f".{trainable}." in n)


def export_adapter(
    model: Any, name: str, run_dir: Optional[Path], folder: Optional[str] = None, acc: Any = None
) -> None:
    """Save adapter `name` in PEFT's format to `<run_dir>/adapters/<folder>/` (`folder` defaults to `name`), on
    the main process of `acc`. Called on every process: a sharded model's adapter tensors are gathered whole
    first (a collective)."""
    weights = None
    if is_sharded(model):
        weights = {
            n: full_tensor(t).detach().cpu() for n, t in model.state_dict().items() if "lora_" in n and f".{name}." in n
        }
    if run_dir is None or (acc is not None and not acc.is_main_process):
        return
    out, dest = Path(run_dir) / "adapters", folder or name
    tmp = out / f".tmp-{dest}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(
        str(tmp), selected_adapters=[name], **({"state_dict": weights} if weights is not None else {})
    )
    src = tmp / name if (tmp / name).is_dir() else tmp
    if (out / dest).exists():
        shutil.rmtree(out / dest)
    os.replace(src, out / dest)
    shutil.rmtree(tmp, ignore_errors=True)


@torch.no_grad()
def mean_prompt_state(model: Any, tokenizer: Any, sequences: list[list[int]], masks: list[list[bool]]) -> torch.Tensor:
    """Mean last hidden state over the masked (prompt) positions of the sequences, adapters disabled."""
    device = next(model.parameters()).device
    total, count = None, 0
    ctx = model.disable_adapter() if is_peft(model) else torch.no_grad()
    with ctx:
        for ids, m in zip(sequences, masks):
            out = model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True)
            h = out.hidden_states[-1][0][torch.tensor(m, device=device)]
            if h.numel():
                total = h.sum(0) if total is None else total + h.sum(0)
                count += h.shape[0]
    reshard(model)
    if total is None:
        raise ValueError("no token selected by the masks: the prototype is undefined (empty sequences?)")
    return (total / max(count, 1)).float().cpu()


@STRATEGIES.register("lora")
class LoRA(Strategy):
    """A LoRA adapter per stage on the frozen base; evaluation routes each task to one adapter."""

    Params = LoRAParams
    needs_task_identity = True  # with router: task; the prototype router infers it
    exports_peft = True  # a stage's model: the base plus that stage's adapter
    supports_fsdp = True  # each stage's adapter is sharded with the base (the loop re-shards the grown model)
    supports_deepspeed = True  # only the adapter is in the engine's optimizer; the base is frozen

    def __init__(self, params: LoRAParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.adapters: list[str] = []
        self.prototypes: dict[str, torch.Tensor] = {}
        self.needs_task_identity = self.params.router == "task"  # type: ignore[attr-defined,misc]

    def wrap_model(self, ctx: StageContext) -> Any:
        model = ctx.model
        for name in self.adapters:
            model = add_adapter(model, name, self.params)
        if not ctx.resuming:
            name = f"stage{ctx.stage_index}"
            model = add_adapter(model, name, self.params)
            if name not in self.adapters:
                self.adapters.append(name)
            train_only(model, [name], name)
        return model

    def after_stage(self, ctx: StageContext) -> None:
        name = f"stage{ctx.stage_index}"
        for q in adapter_params(ctx.model, name).values():
            q.requires_grad_(False)
        if self.params.router == "prototype":  # type: ignore[attr-defined]
            ex = ctx.examples[: self.params.prototype_examples]  # type: ignore[attr-defined]
            self.prototypes[name] = mean_prompt_state(
                ctx.model,
                ctx.tokenizer,
                [e["input_ids"] for e in ex],
                [[lab == -100 for lab in e["labels"]] for e in ex],
            )
        export_adapter(ctx.model, name, ctx.run_dir, acc=ctx.accelerator)

    def route(self, ctx: StageContext, task: Any) -> Optional[str]:
        if self.params.router == "task":  # type: ignore[attr-defined]
            name = f"stage{ctx.task_stage}" if ctx.task_stage is not None else None
            return name if name in self.adapters else None
        if not self.prototypes:
            return None
        items = (ctx.task_items or [])[:32]
        seqs = [
            ctx.formatter.prompt_ids(it["prompt"]) if "prompt" in it else ctx.tokenizer(it.get("text", ""))["input_ids"]
            for it in items
        ]
        seqs = [s for s in seqs if s]
        if not seqs:
            return None
        rep = mean_prompt_state(ctx.model, ctx.tokenizer, seqs, [[True] * len(s) for s in seqs])
        sims = {n: float(torch.cosine_similarity(rep, p, dim=0)) for n, p in self.prototypes.items()}
        return max(sims, key=sims.get)  # type: ignore[arg-type]

    def eval_model(self, ctx: StageContext, task: Any) -> Any:
        model = ctx.model
        if not is_peft(model):
            return model
        name = self.route(ctx, task)
        if name is None:
            model.base_model.disable_adapter_layers()
        else:
            model.base_model.enable_adapter_layers()
            model.base_model.set_adapter(name)
        self.last_route = name
        for n, q in model.named_parameters():  # PEFT's set_adapter marks active adapters trainable
            if "lora_" in n:
                q.requires_grad_(False)
        return model

    def export_adapters(self, ctx: StageContext) -> list[str]:
        name = f"stage{ctx.stage_index}"
        return [name] if name in self.adapters else []  # a stage that trained no adapter: the base

    def trained_tensors(self, model: Any) -> Optional[set[str]]:
        return lora_tensors(model)

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": list(self.adapters), "prototypes": dict(self.prototypes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters = list(state.get("adapters", []))
        self.prototypes = dict(state.get("prototypes", {}))
