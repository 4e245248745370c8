"""FT-L (the constrained fine-tuning baseline of Zhu et al. 2020 as used by ROME): fine-tune one layer's MLP
output projection on the new targets, keeping every weight within an L-infinity ball of radius
`norm_constraint` around its original value (clamped after each step)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, encode, target_ids
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import default_layer, device_of, frozen, mlp_out_name, n_layers, pad_batch, pad_id


class FTParams(Strict):
    layer: Optional[int] = None
    """Layer whose MLP output projection is tuned (default: about 1/6 of the depth)."""
    steps: int = Field(default=25, ge=1)
    """Adam steps over all requests of the call."""
    lr: float = Field(default=5e-4, gt=0)
    norm_constraint: float = Field(default=5e-4, gt=0)
    """Largest change of any single weight (L-infinity)."""


def target_batch(tok: Any, prompts: list[str], targets: list[str], device: Any) -> tuple[Any, Any, Any]:
    """(input_ids, attention_mask, labels) with loss on target tokens only."""
    seqs, labels = [], []
    for pr, t in zip(prompts, targets):
        ids, tgt = encode(tok, pr), target_ids(tok, pr, t)
        seqs.append(ids + tgt)
        labels.append([-100] * len(ids) + tgt)
    ids_t, mask = pad_batch(seqs, pad_id(tok), device)
    lab, _ = pad_batch(labels, -100, device)
    return ids_t, mask, lab


def target_loss(model: Any, ids: Any, mask: Any, labels: Any) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)


@EDITORS.register("ft")
class FineTuneL(Editor):
    """FT-L: fine-tune one MLP output projection within an L-infinity ball (constrained fine-tuning)."""

    Params = FTParams
    batched = True

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: FTParams = self.params  # type: ignore[assignment]
        layer = (p.layer if p.layer is not None else default_layer(model)) % n_layers(model)
        name = mlp_out_name(model, layer)
        w = dict(model.named_parameters())[name]
        w0 = w.detach().clone()
        ids, mask, labels = target_batch(
            tok, [r.text for r in requests], [r.target_new for r in requests], device_of(model)
        )
        losses = []
        with frozen(model):
            w.requires_grad_(True)
            opt = torch.optim.Adam([w], lr=p.lr)
            for _ in range(p.steps):
                loss = target_loss(model, ids, mask, labels)
                losses.append(float(loss.detach()))
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    w.copy_(torch.max(torch.min(w, w0 + p.norm_constraint), w0 - p.norm_constraint))
        delta = (w.detach() - w0).clone()
        with torch.no_grad():
            w.copy_(w0)  # record() re-applies the change and keeps the exact original
        result = EditResult(
            "ft", list(requests), info={"layer": layer, "loss_first": losses[0], "loss_last": losses[-1]}
        )
        result.record(model, name, delta)
        return result
