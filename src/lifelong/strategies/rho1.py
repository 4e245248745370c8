"""Selective language modelling (RHO-1: Lin et al. 2024, "Not All Tokens Are What You Need", NeurIPS).

A reference model trained on high-quality data scores every training token; the loss is taken only on the
`keep` fraction of tokens with the highest excess loss L_model(token) - L_reference(token) in each
micro-batch (tokens the model has not learned yet but that are learnable), the others are masked. The
reference is a model directory (`reference`), or the model as it was at the start of the run (`initial`).
Costs two extra forward passes per micro-batch (current model without gradient, reference).

Sharded (FSDP2): every process scores the whole global micro-batch (as under DDP), so the selection is the
same everywhere and the forward passes are collectives run on the same step; the reference is a frozen twin
sharded like the model (`_frozen.frozen_copy`; a reference directory of another architecture stays whole on
every process). A checkpoint holds the whole initial reference.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._frozen import frozen, frozen_copy, reshard
from lifelong.strategies.base import StageContext, Strategy
from lifelong.train.sharding import full_state_dict, is_sharded


class Rho1Params(Strict):
    keep: float = Field(default=0.6, gt=0, le=1)
    """Fraction k of the scored tokens of each micro-batch that carry the loss (the paper uses 60-70%)."""
    reference: str = "initial"
    """Reference model: a local model directory with safetensors, or `initial` (the run's starting model)."""


def token_losses(model: Any, batch: dict) -> torch.Tensor:
    """Per-token cross-entropy, aligned with labels[:, 1:] (nan where no loss is taken)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    tgt = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none")
    return torch.where(tgt != -100, loss, torch.full_like(loss, float("nan")))


def _same_shapes(a: Any, b: Any) -> bool:
    """Whether two models have the same state-dict names and shapes (a twin of one can hold the other)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(tuple(sa[k].shape) == tuple(sb[k].shape) for k in sa)


@STRATEGIES.register("rho1")
class Rho1(Strategy):
    """RHO-1 selective language modelling: loss only on the top-k% tokens by excess loss over a reference."""

    Params = Rho1Params
    supports_fsdp = True

    def __init__(self, params: Rho1Params | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.ref: Optional[torch.nn.Module] = None
        self.kept_tokens = self.scored_tokens = 0

    def _reference(self, ctx: StageContext) -> torch.nn.Module:
        pending = getattr(self, "_pending", None)
        if self.ref is None and pending is not None:  # resumed: the checkpointed initial model
            self.ref = frozen_copy(ctx.model, pending)
            self._pending = None
        if self.ref is None:
            ref = self.params.reference  # type: ignore[attr-defined]
            if ref == "initial":
                self.ref = frozen_copy(ctx.model)
            else:
                from transformers import AutoModelForCausalLM

                self.ref = AutoModelForCausalLM.from_pretrained(ref, use_safetensors=True)
            if not is_sharded(self.ref):
                self.ref.to(ctx.device or next(ctx.model.parameters()).device)
            frozen(self.ref)
        if self.ref is not getattr(self, "_foreign", None) and self._sharded(ctx.model) and not is_sharded(self.ref):
            if _same_shapes(self.ref, ctx.model):  # taken before the model was sharded: shard it like the model
                self.ref = frozen_copy(ctx.model, self.ref.state_dict())
            else:  # another architecture stays whole on every process
                self._foreign = self.ref
        return self.ref

    def _sharded(self, model: Any) -> bool:
        """Whether the model is sharded (a walk over its parameters), looked up again only when its first
        parameter is another tensor (sharding replaces the parameters)."""
        key = (id(model), id(next(model.parameters(), None)))
        if getattr(self, "_seen", None) != key:
            self._seen, self._seen_sharded = key, is_sharded(model)
        return bool(self._seen_sharded)

    def wrap_model(self, ctx: StageContext) -> Any:
        if self.params.reference == "initial" and self.ref is None and ctx.stage_index == 0 and not ctx.resuming:  # type: ignore[attr-defined]
            self._reference(ctx)  # snapshot before any training
        return ctx.model

    @torch.no_grad()
    def batches(self, ctx: StageContext, it: Iterator[list[dict]]) -> Iterator[list[dict]]:
        from lifelong.data.collate import collate

        k = self.params.keep  # type: ignore[attr-defined]
        pad = ctx.tokenizer.pad_token_id if ctx.tokenizer.pad_token_id is not None else 0
        for batch in it:
            if k >= 1:
                yield batch
                continue
            ref = self._reference(ctx)
            t = collate(batch, pad, ctx.device or "cpu")
            was = ctx.model.training
            ctx.model.eval()
            excess = token_losses(ctx.model, t) - token_losses(ref, t)
            reshard(ctx.model)
            ctx.model.train(was)
            valid = ~torch.isnan(excess)
            n = int(valid.sum())
            n_keep = max(1, int(round(k * n)))
            thresh = excess[valid].sort(descending=True).values[n_keep - 1] if n else 0.0
            keep = valid & (excess >= thresh)
            self.kept_tokens += int(keep.sum())
            self.scored_tokens += n
            out = []
            for r, e in enumerate(batch):
                labels = list(e["labels"])
                for pos in range(1, len(labels)):  # label at pos is predicted at pos-1 (excess[:, pos-1])
                    if labels[pos] != -100 and not bool(keep[r, pos - 1]):
                        labels[pos] = -100
                if all(x == -100 for x in labels[1:]):
                    labels = list(e["labels"])  # never leave an example with no target at all
                out.append({"input_ids": e["input_ids"], "labels": labels})
            yield out

    def cost(self) -> dict[str, Any]:
        return {"rho1_kept_fraction": self.kept_tokens / max(self.scored_tokens, 1)}

    def state_dict(self) -> dict[str, Any]:
        if self.params.reference == "initial" and self.ref is not None:  # type: ignore[attr-defined]
            sd = full_state_dict(self.ref) if is_sharded(self.ref) else self.ref.state_dict()  # sharded: a collective
            return {"reference": sd, "kept": self.kept_tokens, "scored": self.scored_tokens}
        if getattr(self, "_pending", None) is not None:
            return {"reference": self._pending, "kept": self.kept_tokens, "scored": self.scored_tokens}
        return {"kept": self.kept_tokens, "scored": self.scored_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept_tokens, self.scored_tokens = int(state.get("kept", 0)), int(state.get("scored", 0))
        self._pending = state.get("reference")
