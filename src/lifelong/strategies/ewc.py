"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
networks", PNAS) and online EWC (Schwarz et al. 2018, "Progress & Compress", ICML).

After each stage the diagonal empirical Fisher F_k = E_x[(d log p(y|x) / d theta)^2] is estimated from
per-example gradients on the stage's own examples (true labels: the *empirical* Fisher), and the weights
theta*_k are kept. The penalty while training later stages is (Kirkpatrick et al. eq. 3, summed over stages)

    L = L_new + sum_k (lambda / 2) * sum_i F_k,i (theta_i - theta*_k,i)^2

Online EWC keeps one running Fisher F* <- gamma * F* + F_k and one anchor theta* (the latest weights), so
memory stays at two copies of the trainable parameters whatever the number of stages. As for `l2`, the
penalty's gradient lambda * F * (theta - theta*) is added to the gradients in `before_step`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import snapshot, trainable
from lifelong.strategies.base import StageContext, Strategy


class EWCParams(Strict):
    weight: float = Field(default=1e5, ge=0)
    """lambda: importance of old stages relative to the new one. Empirical Fisher values are small and
    shrink with model size, so useful values are large (1e4-1e7); or set `normalize`."""
    online: bool = False
    """Online EWC (Schwarz et al. 2018): one decayed running Fisher and the latest anchor."""
    gamma: float = Field(default=1.0, ge=0, le=1)
    """Decay of the running Fisher in online mode."""
    fisher_samples: int = Field(default=128, ge=1)
    """Examples of the finished stage used to estimate its Fisher (per-example gradients)."""
    normalize: bool = False
    """Divide each stage's Fisher by its mean over all parameters, so `weight` is scale-free."""
    fisher: Literal["empirical", "sampled"] = "empirical"
    """`empirical`: gradients of the true labels (vanishes on data the model already fits);
    `sampled`: labels drawn from the model's own predictive distribution at the response positions (the
    Fisher information proper, as in Kirkpatrick et al.; Kunstner et al. 2019 on the difference)."""


@STRATEGIES.register("ewc")
class EWC(Strategy):
    """Elastic Weight Consolidation with the diagonal empirical Fisher; `online: true` for online EWC."""

    Params = EWCParams

    def __init__(self, params: EWCParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.terms: list[dict[str, dict[str, torch.Tensor]]] = []  # [{"fisher": {...}, "anchor": {...}}]
        self._version = 0  # bumped whenever the terms change (invalidates the device cache)

    def fisher(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        """Mean of squared per-example gradients of the stage's loss, on `fisher_samples` examples spread
        over the processes (each computes its share; the sums are all-reduced)."""
        from lifelong.data.collate import collate

        p: EWCParams = self.params  # type: ignore[assignment]
        model, acc = ctx.model, ctx.accelerator
        params = trainable(model)
        rng = np.random.default_rng([self.seed, ctx.stage_index, 104729])
        n = min(p.fisher_samples, len(ctx.examples))
        idx = rng.choice(len(ctx.examples), size=n, replace=False)
        world, rank = (acc.num_processes, acc.process_index) if acc is not None else (1, 0)
        mine = np.array_split(idx, world)[rank]
        device = ctx.device or next(model.parameters()).device
        pad = ctx.tokenizer.pad_token_id if ctx.tokenizer is not None and ctx.tokenizer.pad_token_id is not None else 0
        fisher = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
        gen = torch.Generator(device=device).manual_seed(int(self.seed * 7919 + ctx.stage_index))
        was_training = model.training
        model.eval()  # no dropout noise in the Fisher
        for i in mine:
            model.zero_grad(set_to_none=True)
            batch = collate([ctx.examples[int(i)]], pad, device)
            if p.fisher == "sampled":
                with torch.no_grad():
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    probs = torch.softmax(logits[0, :-1].float(), -1)  # position t predicts token t+1
                    draw = torch.multinomial(probs, 1, generator=gen)[:, 0][None]
                    keep = batch["labels"][:, 1:] != -100
                    batch["labels"][:, 1:] = torch.where(keep, draw, batch["labels"][:, 1:])
            model(**batch).loss.backward()
            for k, v in params.items():
                if v.grad is not None:
                    fisher[k] += v.grad.detach().float() ** 2
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        if world > 1:
            fisher = {k: acc.reduce(v, "sum") for k, v in fisher.items()}
        fisher = {k: v / n for k, v in fisher.items()}
        if p.normalize:
            mean = torch.stack([v.sum() for v in fisher.values()]).sum() / sum(v.numel() for v in fisher.values())
            fisher = {k: v / mean.clamp(min=1e-30) for k, v in fisher.items()}
        return fisher

    def after_stage(self, ctx: StageContext) -> None:
        p: EWCParams = self.params  # type: ignore[assignment]
        f = self.fisher(ctx)
        anchor = snapshot(ctx.model)
        if p.online and self.terms:
            old = self.terms[0]["fisher"]
            f = {k: p.gamma * old[k] + v for k, v in f.items()}
            self.terms = []
        self.terms.append({"fisher": f, "anchor": anchor})
        self._version += 1

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        lam = self.params.weight  # type: ignore[attr-defined]
        if not self.terms or lam == 0:
            return
        for params, fishers, anchors in self._lists(ctx.model):
            live = [i for i, p in enumerate(params) if p.grad is not None]
            diff = torch._foreach_sub([params[i].detach() for i in live], [anchors[i] for i in live])
            torch._foreach_mul_(diff, [fishers[i] for i in live])
            torch._foreach_add_([params[i].grad for i in live], diff, alpha=lam)  # grad += lam F (theta - theta*)

    def _lists(self, model: Any) -> list[tuple[list, list, list]]:
        """Per term: (parameters, Fisher, anchor) aligned lists on the parameters' device, cached."""
        key = (id(model), self._version)
        if getattr(self, "_cache_key", None) != key:
            named = trainable(model)
            out = []
            for t in self.terms:
                names = [n for n in named if n in t["fisher"]]
                out.append(
                    (
                        [named[n] for n in names],
                        [t["fisher"][n].to(named[n].device, named[n].dtype) for n in names],
                        [t["anchor"][n].to(named[n].device) for n in names],
                    )
                )
            self._cache, self._cache_key = out, key
        return self._cache

    def penalty_value(self, model: Any) -> float:
        """The EWC penalty itself (for logging and tests)."""
        lam = self.params.weight  # type: ignore[attr-defined]
        total = 0.0
        for name, p in trainable(model).items():
            for t in self.terms:
                if name in t["fisher"]:
                    total += float((t["fisher"][name] * (p.detach() - t["anchor"][name]) ** 2).sum())
        return lam / 2 * total

    def state_dict(self) -> dict[str, Any]:
        return {"terms": self.terms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.terms = [dict(t) for t in state.get("terms", [])]
        self._version += 1
