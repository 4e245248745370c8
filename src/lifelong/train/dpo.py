"""Direct Preference Optimization in lifelong's own loop (Rafailov et al. 2023), with the IPO (Azar et al.
2023) and conservative (label-smoothing) variants and an optional SFT term.

With pi the policy and pi_ref the reference (the model as the preference stage starts, so a stream of
preference stages stays anchored to the previous stage, not to the original base), and log-ratios
r_w = log pi(y_w|x) - log pi_ref(y_w|x), r_l likewise (sums over response tokens), h = r_w - r_l:
- sigmoid (DPO, eq. 7):  L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)   (eps > 0: cDPO)
- ipo:                   L = (h_avg - 1 / (2 beta))^2, with per-token averaged log-ratios
Reference log-probabilities are computed once per example before training (no second model is held) and
stored in the run directory, so a resumed stage uses the same reference. With several processes every one
computes all of them (the same forward passes in the same order, which a sharded model needs: its forward
passes are collectives) and the main process writes the file.
Logged per step: implicit rewards beta r_w and beta r_l, their margin, accuracy (beta r_w > beta r_l) and the
mean chosen log-ratio (an estimate of the policy's KL from the reference on the chosen responses).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import torch
import torch.nn.functional as F

from lifelong.config import PreferenceConfig
from lifelong.train.sharding import reshard


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log-probabilities of the labelled tokens per sequence, and their count."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = labels[:, 1:]
    mask = tgt != -100
    tok = logp.gather(2, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (tok * mask).sum(1), mask.sum(1)


def pair_batch(examples: list[dict], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """[chosen..., rejected...] right-padded into one batch."""
    from lifelong.data.collate import collate

    seqs = [{"input_ids": e["chosen_ids"], "labels": e["chosen_labels"]} for e in examples] + [
        {"input_ids": e["rejected_ids"], "labels": e["rejected_labels"]} for e in examples
    ]
    return collate(seqs, pad_id, device)


def dpo_loss(
    pc: torch.Tensor,
    pr: torch.Tensor,
    rc: torch.Tensor,
    rr: torch.Tensor,
    cfg: PreferenceConfig,
    nc: Optional[torch.Tensor] = None,
    nr: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict]:
    """Per-pair losses (mean returned) and metrics from policy (pc, pr) and reference (rc, rr) log-probs."""
    chosen_lr, rejected_lr = pc - rc, pr - rr
    if cfg.loss == "ipo":
        h = chosen_lr / nc.clamp(min=1) - rejected_lr / nr.clamp(min=1)  # type: ignore[union-attr]
        losses = (h - 1 / (2 * cfg.beta)) ** 2
    else:
        h = chosen_lr - rejected_lr
        eps = cfg.label_smoothing
        losses = -(1 - eps) * F.logsigmoid(cfg.beta * h) - eps * F.logsigmoid(-cfg.beta * h)
    rw, rl = cfg.beta * chosen_lr.detach(), cfg.beta * rejected_lr.detach()
    logs = {
        "reward_chosen": float(rw.mean()),
        "reward_rejected": float(rl.mean()),
        "reward_margin": float((rw - rl).mean()),
        "reward_accuracy": float((rw > rl).float().mean()),
        "kl_chosen": float(chosen_lr.detach().mean()),
    }
    return losses.mean(), logs


class DPOObjective:
    """The loop's loss for preference stages (see module docstring)."""

    def __init__(self, cfg: PreferenceConfig, pad_id: int) -> None:
        self.cfg, self.pad_id = cfg, pad_id
        self.last_logs: dict[str, float] = {}

    @torch.no_grad()
    def prepare(
        self, model: Any, examples: list[dict], store: Optional[Path], batch_size: int = 8, write: bool = True
    ) -> None:
        """Reference log-probs of every pair, computed once with the stage-start model (or read back from
        `store`; written there when `write`: by the main process only)."""
        if store is not None and store.exists():
            saved = json.loads(store.read_text())
            if len(saved) == len(examples):
                for e, (c, r) in zip(examples, saved):
                    e["ref_chosen"], e["ref_rejected"] = c, r
                return
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        for a in range(0, len(examples), batch_size):
            part = examples[a : a + batch_size]
            b = pair_batch(part, self.pad_id, device)
            logps, _ = sequence_logps(
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
            )
            for k, e in enumerate(part):
                e["ref_chosen"], e["ref_rejected"] = float(logps[k]), float(logps[len(part) + k])
        reshard(model)
        model.train(was)
        if store is not None and write:
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_name(store.name + ".tmp")
            tmp.write_text(json.dumps([[e["ref_chosen"], e["ref_rejected"]] for e in examples]))
            tmp.replace(store)

    def __call__(self, model: Any, examples: list[dict], device: Any) -> tuple[torch.Tensor, Any, dict]:
        pairs = [e for e in examples if "chosen_ids" in e]
        plain = [e for e in examples if "chosen_ids" not in e]  # replayed instruction / pre-training data
        if not pairs:
            from lifelong.data.collate import collate

            b = collate(plain, self.pad_id, device)
            out = model(**b)
            return out.loss, out, {"lm_replay_loss": float(out.loss.detach()), "_batch": b}
        loss, out, logs = self._pairs(model, pairs, device)
        if plain:  # the plain LM loss on replayed examples, weighted by their share of the micro-batch
            from lifelong.data.collate import collate

            lm = model(**collate(plain, self.pad_id, device)).loss
            share = len(plain) / len(examples)
            loss = (1 - share) * loss + share * lm
            logs["lm_replay_loss"] = float(lm.detach())
        return loss, out, logs

    def _pairs(self, model: Any, examples: list[dict], device: Any) -> tuple[torch.Tensor, Any, dict]:
        b = pair_batch(examples, self.pad_id, device)
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        logps, counts = sequence_logps(out.logits, b["labels"])
        n = len(examples)
        ref_c = torch.tensor([e["ref_chosen"] for e in examples], device=logps.device)
        ref_r = torch.tensor([e["ref_rejected"] for e in examples], device=logps.device)
        loss, logs = dpo_loss(logps[:n], logps[n:], ref_c, ref_r, self.cfg, counts[:n], counts[n:])
        if self.cfg.sft_weight:
            sft = -(logps[:n] / counts[:n].clamp(min=1)).mean()
            loss = loss + self.cfg.sft_weight * sft
            logs["sft_nll"] = float(sft.detach())
        self.last_logs = logs
        chosen = {k: v[:n] for k, v in b.items()}  # what strategies' penalties see: the chosen sequences
        return loss, SimpleNamespace(logits=out.logits[:n], loss=loss), {**logs, "_batch": chosen}
