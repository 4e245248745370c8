"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
networks", PNAS) and online EWC (Schwarz et al. 2018, "Progress & Compress", ICML).

After each stage k the diagonal empirical Fisher F_k = E_x[(d log p(y|x) / d theta)^2] is estimated from
per-example gradients on the stage's own examples (true labels: the *empirical* Fisher), and the weights
theta_k at the end of the stage are the anchor. The penalty while training later stages is (Kirkpatrick et
al. eq. 3, summed over stages)

    L = L_new + sum_k (lambda / 2) * sum_i F_k,i (theta_i - theta_k,i)^2

Offline EWC keeps that sum in closed form. A sum of diagonal quadratics is one quadratic, element by element:

    sum_k F_k (theta - theta_k)^2 = F (theta - theta*)^2 + c,   F = sum_k F_k,   theta* = sum_k F_k theta_k / F,
    c = sum_k F_k theta_k^2 - F theta*^2 >= 0 (independent of theta)

(where F = 0 every F_k is 0 and the term vanishes whatever theta* is; theta* is then the latest anchor). So
the state is one Fisher sum and one anchor, two tensors per parameter however many stages have passed, and
the penalty's gradient lambda * F * (theta - theta*) equals the per-stage sum's exactly (up to float
rounding). Stages are folded in one at a time (`fold`): with (F, a) so far and a new stage (G, b),

    F' = F + G,   a' = a + (G / F') (b - a),   c' = c + sum_i F_i G_i / F'_i (a_i - b_i)^2,

the convex update keeping a' between a and b. `c` (a float) is kept only so `penalty_value` reports the
same number as the per-stage sum; training never needs it. `normalize` scales each F_k before it is
folded in, exactly as before.

Online EWC keeps one running Fisher F* <- gamma * F* + F_k and one anchor theta* (the latest weights), so
memory stays at two copies of the trainable parameters whatever the number of stages. As for `l2`, the
penalty's gradient lambda * F * (theta - theta*) is added to the gradients in `before_step`; under DeepSpeed,
whose engine keeps the gradients to itself, the penalty goes into the loss instead (`penalty`, same gradient).

Sharded (FSDP2): F and theta* are kept as shards laid out like the parameters and every update above is
elementwise, so each process works on its own shards and the gradient equals the unsharded one. The Fisher's
per-example gradients come from backward passes of the sharded model, whose gradients FSDP2 averages over
the processes, so under sharding every process runs the same examples in the same order (the average of
equal gradients is that gradient) and squares its shard of it: the Fisher equals the one-process Fisher,
at N times the DDP compute. A checkpoint holds whole tensors (gathered in `state_dict`).

Checkpoints written before the closed form (state `{"terms": [{"fisher", "anchor"}, ...]}`, one term per
stage) load: their terms are folded in order on `load_state_dict`, which gives the same gradients.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.strategies import STRATEGIES
from lifelong.strategies._anchors import gathered, global_sum, laid_out, snapshot, trainable
from lifelong.strategies._frozen import reshard
from lifelong.strategies.base import READS_WHOLE_WEIGHTS, StageContext, Strategy
from lifelong.train.sharding import is_sharded, local_tensor


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
    supports_fsdp = True
    supports_deepspeed = True  # the gradient term through `penalty` (tests/test_deepspeed.py)
    zero3_note = READS_WHOLE_WEIGHTS

    def __init__(self, params: EWCParams | None = None, seed: int = 0) -> None:
        super().__init__(params, seed)
        self.fisher_sum: dict[str, torch.Tensor] = {}
        """F: the sum of the finished stages' Fishers (online: the decayed running Fisher), by parameter name."""
        self.anchor: dict[str, torch.Tensor] = {}
        """theta*: the F-weighted mean of the stages' end weights (online: the latest end weights)."""
        self.offset = 0.0
        """c: sum_k F_k (theta - theta_k)^2 - F (theta - theta*)^2, a constant (offline; 0 online)."""
        self.stages = 0
        """Stages folded into the state."""
        self._version = 0  # bumped whenever the state changes (invalidates the device cache)

    def fisher(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        """Mean of squared per-example gradients of the stage's loss, on `fisher_samples` examples spread
        over the processes (each computes its share; the sums are all-reduced). Sharded: every process runs
        every example and squares its shard of the gradient (see the module doc)."""
        from lifelong.data.collate import collate

        p: EWCParams = self.params  # type: ignore[assignment]
        model, acc = ctx.model, ctx.accelerator
        params = trainable(model)
        rng = np.random.default_rng([self.seed, ctx.stage_index, 104729])
        n = min(p.fisher_samples, len(ctx.examples))
        idx = rng.choice(len(ctx.examples), size=n, replace=False)
        world, rank = (acc.num_processes, acc.process_index) if acc is not None else (1, 0)
        sharded = any(is_sharded(v) for v in params.values())
        mine = idx if sharded else np.array_split(idx, world)[rank]
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
        reshard(model)
        model.train(was_training)
        if world > 1 and not sharded:
            fisher = {k: acc.reduce(v, "sum") for k, v in fisher.items()}
        fisher = {k: v / n for k, v in fisher.items()}
        if p.normalize:
            if sharded:  # the sum over all parameters: every process's shards (one float per tensor)
                total = sum(global_sum(v) for v in fisher.values())
                mean = torch.tensor(total / sum(v.numel() for v in fisher.values()), dtype=torch.float32)
            else:
                mean = torch.stack([v.sum() for v in fisher.values()]).sum() / sum(v.numel() for v in fisher.values())
            fisher = {k: v / mean.clamp(min=1e-30) for k, v in fisher.items()}
        return fisher

    def after_stage(self, ctx: StageContext) -> None:
        p: EWCParams = self.params  # type: ignore[assignment]
        f = self.fisher(ctx)
        anchor = snapshot(ctx.model)
        named = trainable(ctx.model)  # state restored whole from a checkpoint meets the new shards
        self.fisher_sum, self.anchor = laid_out(self.fisher_sum, named), laid_out(self.anchor, named)
        if p.online:
            old = self.fisher_sum
            self.fisher_sum = {k: p.gamma * old[k] + v if k in old else v for k, v in f.items()}
            self.anchor = anchor
        else:
            self.fold(f, anchor)
        self.stages += 1
        self._version += 1

    @torch.no_grad()
    def fold(self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> None:
        """Add one stage's term F_k (theta - theta_k)^2 to the offline state (the update in the module doc)."""
        for k, g in fisher.items():
            b = anchor[k]
            if k not in self.fisher_sum:  # the first term on this parameter: it is its own closed form
                self.fisher_sum[k], self.anchor[k] = g, b
                continue
            f, a = self.fisher_sum[k], self.anchor[k].float()
            total = f + g
            share = torch.where(total > 0, g / total.clamp(min=torch.finfo(total.dtype).tiny), torch.ones_like(g))
            gap = b.float() - a
            self.offset += global_sum(f * share * gap**2, torch.float64)  # F G / F' (a - b)^2
            self.fisher_sum[k], self.anchor[k] = total, a + share * gap
        self._version += 1

    def penalty(self, ctx: StageContext, batch: dict, out: Any) -> Optional[torch.Tensor]:
        """Under DeepSpeed only (`ctx.engine_steps`: no gradient reaches `before_step`): the penalty itself,
        (lambda / 2) sum_i F_i (theta_i - theta*_i)^2, whose gradient autograd adds to the loss's; the same
        lambda F (theta - theta*) that `before_step` adds otherwise (the loop divides each micro-batch's loss
        by the accumulation steps, so the step gets it once)."""
        lam = self.params.weight  # type: ignore[attr-defined]
        if not ctx.engine_steps or not self.fisher_sum or lam == 0:
            return None
        params, _, fishers, anchors = self._lists(ctx.model)
        terms = [(f * (q - a) ** 2).sum() for q, f, a in zip(params, fishers, anchors)]
        return lam / 2 * torch.stack(terms).sum() if terms else None

    @torch.no_grad()
    def before_step(self, ctx: StageContext) -> None:
        lam = self.params.weight  # type: ignore[attr-defined]
        if not self.fisher_sum or lam == 0:
            return
        params, values, fishers, anchors = self._lists(ctx.model)
        live = [i for i, p in enumerate(params) if p.grad is not None]
        grads = [params[i].grad for i in live]
        if self._sharded:  # the same elementwise update on this process's shards
            grads = [local_tensor(g) for g in grads]
        diff = torch._foreach_sub([values[i] for i in live], [anchors[i] for i in live])
        torch._foreach_mul_(diff, [fishers[i] for i in live])
        torch._foreach_add_(grads, diff, alpha=lam)  # grad += lam F (theta - theta*)

    def _lists(self, model: Any) -> tuple[list, list, list, list]:
        """(parameters, their values, F, theta*) as aligned lists on the parameters' device, cached per model
        and state; sharded: values, F and theta* are this process's shards (local tensors)."""
        key = (id(model), self._version)
        if getattr(self, "_cache_key", None) != key:
            named = trainable(model)
            self.fisher_sum, self.anchor = laid_out(self.fisher_sum, named), laid_out(self.anchor, named)
            names = [n for n in named if n in self.fisher_sum]
            self._sharded = any(is_sharded(named[n]) for n in names)
            loc = local_tensor if self._sharded else (lambda t: t)
            self._cache = (
                [named[n] for n in names],
                [loc(named[n]).detach() for n in names],
                [loc(self.fisher_sum[n]).to(loc(named[n]).device, named[n].dtype) for n in names],
                [loc(self.anchor[n]).to(loc(named[n]).device) for n in names],
            )
            self._cache_key = key
        return self._cache

    def penalty_value(self, model: Any) -> float:
        """The EWC penalty itself, (lambda / 2) (sum_i F_i (theta_i - theta*_i)^2 + c) (for logging and tests)."""
        lam = self.params.weight  # type: ignore[attr-defined]
        total = self.offset
        named = trainable(model)
        self.fisher_sum, self.anchor = laid_out(self.fisher_sum, named), laid_out(self.anchor, named)
        for name, p in named.items():
            if name in self.fisher_sum:
                total += global_sum(self.fisher_sum[name] * (p.detach().float() - self.anchor[name].float()) ** 2)
        return lam / 2 * total

    def state_dict(self) -> dict[str, Any]:
        return {
            "fisher": gathered(self.fisher_sum),
            "anchor": gathered(self.anchor),
            "offset": self.offset,
            "stages": self.stages,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fisher_sum, self.anchor, self.offset = {}, {}, 0.0
        if "terms" in state:  # written before the closed form: one term per stage (offline), folded in order
            for t in state["terms"]:  # (online states had one term, which folds to itself)
                self.fold(dict(t["fisher"]), dict(t["anchor"]))
            self.stages = len(state["terms"])
        else:
            self.fisher_sum, self.anchor = dict(state.get("fisher", {})), dict(state.get("anchor", {}))
            self.offset, self.stages = float(state.get("offset", 0.0)), int(state.get("stages", 0))
        self._version += 1
