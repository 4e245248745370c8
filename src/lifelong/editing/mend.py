"""MEND (Mitchell et al. 2022, "Fast Model Editing at Scale"): an editor network g, trained once per model,
turns an edit's fine-tuning gradient into a weight update in one step.

The gradient of a linear layer is sum_t delta_t u_t^T (input u_t, output gradient delta_t per token). For the
MLP output projection of each edited layer (default: the last 3), g maps z_t = [u_t ; delta_t], normalised by
fixed per-layer mean/std over the training edits, through a low-rank residual MLP shared by the layers of one
weight shape, with per-layer scale s_l and offset o_l (paper §3.1): h = z + s_l * U relu(V z + b) + o_l,
U = 0 at init (g starts as the identity). h, mapped back to the original scale, gives pseudo-activations u~
and pseudo-gradients delta~; the update is W <- W - lr_l * sum_t delta~_t u~_t^T with a learned step size
lr_l per layer (the untrained g is one plain gradient step). Training (Adam on g and log lr_l; base weights
fixed) applies the update functionally and minimises c_edit * NLL(target_new | edit prompt, paraphrases) +
c_loc * KL(pre || post) of unrelated prompts' next-token distributions (neighbourhood, other training edits).
Editing: one forward and backward pass. The editor is stored as safetensors + json, keyed by a hash of the
model's weights other than the edited ones (so it is still found after MEND's own edits).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch.func import functional_call

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, encode, load_requests, target_ids
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    device_of,
    frozen,
    mlp_out_name,
    module_of,
    n_layers,
    pad_batch,
    pad_id,
    to_param_layout,
    weight_2d,
    weights_fingerprint,
)


class MendParams(Strict):
    layers: Optional[list[int]] = None
    """Layers whose MLP output projection is edited (default: the last 3)."""
    editor_path: Optional[str] = None
    """Directory of the trained editor (editor.safetensors + editor.json): loaded when it exists, else the
    editor is trained and saved there. Default: `<cache_dir>/mend/<model hash>`."""
    train_requests: Optional[str] = None
    """jsonl of edit requests to train the editor on when no trained editor exists yet."""
    steps: int = Field(default=400, ge=0)
    """Training steps (one training edit each)."""
    lr: float = Field(default=1e-3, gt=0)
    """Adam learning rate of the editor network."""
    lr_lr: float = Field(default=0.05, gt=0)
    """Adam learning rate of the per-layer log step sizes."""
    init_lr: float = Field(default=1e-3, gt=0)
    """Initial per-layer step size lr_l."""
    rank: int = Field(default=16, ge=1)
    """Rank of the editor network's hidden layer."""
    c_edit: float = Field(default=1.0, ge=0)
    """Weight of the edit loss (NLL of target_new on the edit prompt and its paraphrases)."""
    c_loc: float = Field(default=0.5, ge=0)
    """Weight of the locality loss: KL(pre || post) of unrelated prompts' next-token distributions, summed
    over a prompt's positions and averaged over prompts."""
    n_loc: int = Field(default=4, ge=0)
    """Other training edits' prompts added to each step's unrelated prompts."""
    seed: int = 0
    """Seed of the training order."""


def _batch(tok: Any, pairs: list[tuple[str, Optional[str]]], device: Any) -> tuple[Any, Any, Any]:
    """(ids, mask, labels) of prompt + target[:-1]; labels[t] is the target token predicted at position t
    (a None target: just the prompt, no labels)."""
    seqs, labels = [], []
    for prompt, target in pairs:
        ids, tgt = encode(tok, prompt), target_ids(tok, prompt, target) if target is not None else []
        seqs.append(ids + tgt[:-1])
        labels.append([-100] * (len(ids) - 1) + (tgt or [-100]))
    ids_t, mask = pad_batch(seqs, pad_id(tok), device)
    return ids_t, mask, pad_batch(labels, -100, device)[0]


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean target NLL per sequence."""
    per = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return per.sum(1) / (labels != -100).sum(1)


def u_delta(model: Any, tok: Any, requests: list[EditRequest], names: list[str]) -> dict[str, tuple[Any, Any]]:
    """Per edited weight: inputs u (tokens, in) and output gradients delta (tokens, out) of the edit loss
    (sum over requests of the mean target NLL), over all non-padding tokens."""
    ids, mask, labels = _batch(tok, [(r.text, r.target_new) for r in requests], device_of(model))
    params, seen = dict(model.named_parameters()), {}  # type: tuple[dict, dict]
    hooks = [
        module_of(model, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0], o))) for n in names
    ]
    with frozen(model):
        for n in names:
            params[n].requires_grad_(True)
        try:
            loss = _nll(model(input_ids=ids, attention_mask=mask).logits, labels).sum()
        finally:
            for h in hooks:
                h.remove()
        grads = torch.autograd.grad(loss, [seen[n][1] for n in names])
    keep = mask.bool()
    return {n: (seen[n][0][keep].detach().float(), g[keep].float()) for n, g in zip(names, grads)}


class MendNet(torch.nn.Module):
    """g for every edited weight (shapes: (out, in) per layer) with normalisation and step sizes."""

    def __init__(self, shapes: list[tuple[int, int]], rank: int, init_lr: float) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.nets = torch.nn.ModuleDict()
        for o, i in sorted(set(self.shapes)):
            v, u = torch.nn.Linear(i + o, rank), torch.nn.Linear(rank, i + o, bias=False)
            torch.nn.init.zeros_(u.weight)
            self.nets[f"{o}x{i}"] = torch.nn.Sequential(v, torch.nn.ReLU(), u)
        self.scale = torch.nn.ParameterList([torch.ones(o + i) for o, i in self.shapes])
        self.offset = torch.nn.ParameterList([torch.zeros(o + i) for o, i in self.shapes])
        self.log_lr = torch.nn.Parameter(torch.full((len(shapes),), math.log(init_lr)))
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(len(shapes), max(o + i for o, i in self.shapes)))
        self.register_buffer("std", torch.ones_like(self.mean))

    def update(self, k: int, u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """-lr_k * sum_t delta~_t u~_t^T, laid out (out, in)."""
        o, i = self.shapes[k]
        mean, std = self.mean[k, : o + i], self.std[k, : o + i]
        z = (torch.cat([u, delta], -1) - mean) / std
        h = z + self.scale[k] * self.nets[f"{o}x{i}"](z) + self.offset[k]
        h = h * std + mean
        return -self.log_lr[k].exp() * h[:, i:].T @ h[:, :i]


def _fingerprint(model: Any, names: list[str]) -> str:
    """The model's identity apart from the edited weights (a saved editor is still found after its edits)."""
    return weights_fingerprint(model, lambda name: name in names, "|".join(names))


@EDITORS.register("mend")
class MendEditor(Editor):
    Params = MendParams
    batched = True
    needs_training = True

    def __init__(self, params: Optional[BaseModel] = None, train_requests: Optional[Any] = None) -> None:
        super().__init__(params)
        self.train_source = train_requests
        """Training requests given in Python (a list of EditRequests or rows); wins over params.train_requests."""
        self.trainings = 0
        self.loaded: dict[int, tuple[MendNet, list[str], dict]] = {}

    def names(self, model: Any) -> list[str]:
        p: MendParams = self.params  # type: ignore[assignment]
        n = n_layers(model)
        layers = p.layers if p.layers is not None else list(range(max(0, n - 3), n))
        return [mlp_out_name(model, layer) for layer in layers]

    def path(self, model: Any) -> Path:
        p: MendParams = self.params  # type: ignore[assignment]
        if p.editor_path:
            return Path(p.editor_path)
        from lifelong.data.cache import cache_dir

        return cache_dir() / "mend" / _fingerprint(model, self.names(model))

    def editor_for(self, model: Any, tok: Any) -> tuple[MendNet, list[str], dict]:
        """The trained editor of this model: already in memory, on disk, or trained now (and saved)."""
        p: MendParams = self.params  # type: ignore[assignment]
        if id(model) not in self.loaded:
            path = self.path(model)
            if (path / "editor.json").is_file():
                meta = json.loads((path / "editor.json").read_text())
                if p.layers is not None and meta["names"] != self.names(model):
                    raise ValueError(f"the MEND editor at {path} edits {meta['names']}, not the requested layers")
                meta["same_model"] = meta["fingerprint"] == _fingerprint(model, meta["names"])
                net = MendNet(meta["shapes"], meta["rank"], 1.0)
                net.load_state_dict(load_file(str(path / "editor.safetensors")))
                self.loaded[id(model)] = (net.to(device_of(model)), meta["names"], meta)
            else:
                source = self.train_source if self.train_source is not None else p.train_requests
                if source is None:
                    raise ValueError(
                        f"MEND has no trained editor for this model at {path}; train one by passing "
                        "train_requests (a jsonl of edit requests, or MendEditor(params, "
                        "train_requests=[...]) in Python), or point editor_path to a trained editor"
                    )
                self.train_editor(model, tok, source)
        return self.loaded[id(model)]

    def train_editor(self, model: Any, tok: Any, source: Any) -> MendNet:
        """Train g on edit requests (jsonl path, rows or EditRequests; base weights untouched), save it to
        `self.path(model)` and keep it for this model."""
        p: MendParams = self.params  # type: ignore[assignment]
        requests = load_requests(source)
        if not requests:
            raise ValueError("MEND needs at least one training edit request")
        names, device, path = self.names(model), device_of(model), self.path(model)
        weights = dict(model.named_parameters())
        shapes = [(int(w.shape[0]), int(w.shape[1])) for w in (weight_2d(module_of(model, n)) for n in names)]
        net = MendNet(shapes, p.rank, p.init_lr).to(device)
        cache = [u_delta(model, tok, [r], names) for r in requests]  # the base model is fixed: once each
        for k, n in enumerate(names):  # fixed normalisation statistics; std floored per half (u, delta)
            u, d = (torch.cat([c[n][j] for c in cache]) for j in (0, 1))
            sd = [x.std(0) if len(x) > 1 else torch.ones_like(x[0]) for x in (u, d)]
            net.mean[k, : u.shape[1] + d.shape[1]] = torch.cat([u.mean(0), d.mean(0)])
            net.std[k, : u.shape[1] + d.shape[1]] = torch.cat([x.clamp_min(1e-3 * float(x.mean()) + 1e-12) for x in sd])
        rest = [q for name, q in net.named_parameters() if name != "log_lr"]
        opt = torch.optim.Adam([{"params": rest, "lr": p.lr}, {"params": [net.log_lr], "lr": p.lr_lr}])
        rng, base, log = random.Random(p.seed), {n: weights[n].detach() for n in names}, []
        with frozen(model):
            for _ in range(p.steps):
                r = requests[j := rng.randrange(len(requests))]
                others = [q.text for q in requests if q.subject != r.subject]
                loc = [x["prompt"] for x in r.neighborhood] + rng.sample(others, min(p.n_loc, len(others)))
                pairs = [(t, r.target_new) for t in [r.text] + r.paraphrases]
                ids, mask, labels = _batch(tok, pairs + [(t, None) for t in loc], device)
                n_e = len(pairs)
                new = {
                    n: (base[n] + to_param_layout(module_of(model, n), net.update(k, *cache[j][n]))).to(base[n].dtype)
                    for k, n in enumerate(names)
                }
                logits = functional_call(model, new, (), {"input_ids": ids, "attention_mask": mask}).logits
                loss_e = _nll(logits[:n_e], labels[:n_e]).mean()
                loss_l = torch.zeros(())
                if loc:
                    with torch.no_grad():
                        ref = F.log_softmax(model(input_ids=ids[n_e:], attention_mask=mask[n_e:]).logits.float(), -1)
                    kl = (ref.exp() * (ref - F.log_softmax(logits[n_e:].float(), -1))).sum(-1)
                    loss_l = (kl * mask[n_e:]).sum() / len(loc)
                opt.zero_grad()
                (p.c_edit * loss_e + p.c_loc * loss_l).backward()
                opt.step()
                log.append((loss_e.item(), loss_l.item()))
        self.trainings += 1
        tail = log[-50:]
        meta = {
            "names": names,
            "shapes": shapes,
            "rank": p.rank,
            "fingerprint": _fingerprint(model, names),
            "train_edits": len(requests),
            "steps": p.steps,
            "lr": net.log_lr.exp().tolist(),
            **{
                k: sum(x[i] for x in tail) / len(tail) if tail else None
                for i, k in enumerate(("edit_loss", "loc_loss"))
            },
        }  # means over the last 50 steps
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(path / "editor.safetensors")
        )
        (path / "editor.json").write_text(json.dumps(meta, indent=1))
        self.loaded[id(model)] = (net, names, meta)
        return net

    def state_dict(self) -> dict[str, Any]:
        """The trained editor network in use (weights and its json description), so a resumed run edits with
        exactly the same network even when the cache it came from is gone."""
        if not self.loaded:
            return {}
        net, _, meta = list(self.loaded.values())[-1]
        return {
            "net": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            "meta": json.loads(json.dumps(meta)),
        }

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        if not state:
            return
        meta = dict(state["meta"])
        net = MendNet([tuple(s) for s in meta["shapes"]], int(meta["rank"]), 1.0)
        net.load_state_dict(state["net"])
        self.loaded[id(model)] = (net.to(device_of(model)), list(meta["names"]), meta)

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        net, names, meta = self.editor_for(model, tok)
        ud = u_delta(model, tok, requests, names)
        result = EditResult(
            "mend",
            list(requests),
            info={"layers": names, "editor_lr": meta["lr"], "editor_same_model": meta.get("same_model", True)},
        )
        with torch.no_grad():
            for k, n in enumerate(names):
                result.record(model, n, to_param_layout(module_of(model, n), net.update(k, *ud[n])))
        return result
