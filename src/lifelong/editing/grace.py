"""GRACE (Hartvigsen et al. 2023, "Aging with GRACE: Lifelong Model Editing with Discrete Key-Value
Adaptors"): edits are entries of a codebook that wraps one module; no base weight changes.

Implemented: one adaptor wraps layer `layer`'s MLP output projection (`common.mlp_out`; its input is the
key space, its output the value space; a module-level choice, not the whole decoder layer, so the
residual stream and attention stay the model's own). The codebook holds keys (the projection's input at a
token), values (replacement outputs), deferral radii eps and labels (`target_new`). At every token
position the nearest key (Euclidean) is looked up; if the distance is within that entry's eps the
projection's output at that position is replaced by the entry's value, otherwise the module is untouched
(bit for bit). Because the key is taken per token position, teacher-forced scoring and generation (with or
without a KV cache) see the same replacement at the last prompt token.

An edit takes the key at the edit prompt's last token, then updates the codebook by the paper's rules:
nothing within eps + eps_init of the nearest key -> add an entry with radius eps_init; nearest entry within
reach with the same label -> expand its radius to cover the key; with another label -> split: both radii
become half the distance (never larger than before / than eps_init) and the new entry is added. Addition
beyond the paper: a key equal to a stored key (distance below `same_key`) with another label overwrites
that entry (a re-edit of the same prompt), since a split would leave radii of zero. A new (or overwritten)
entry's value starts from the module's own output at the key, an expanded entry keeps its value; the value
alone is then trained with Adam (the target tokens' NLL, teacher forced, through the lookup) until the NLL
is below `stop_loss` (an expanded entry that already gives the target stays as it is). The adaptor lives on
the model (attribute `grace_adaptors`, one per layer) so sequential edits share one codebook; each
EditResult's `restore` takes back exactly its own codebook changes (entries added, radii, values and labels
changed) and removes the hook once the codebook is empty.

Limitations: a paraphrase is edited only if its key falls inside a radius (eps_init is an absolute
distance whose scale depends on the model and layer: tune it); the value acts only at the last prompt
token, so later tokens of a multi-token target must follow through attention, which may fail (the final
`nll` in `info` shows it, and `note_convergence` records it against `stop_loss`); the codebook is not saved
by `save_pretrained`: `state_dict` holds it (what `lifelong edit` keeps to resume, and writes as
`editor_state.pt`).
"""

from __future__ import annotations

import weakref
from typing import Any, Optional

import torch
import torch.nn.functional as F
from pydantic import Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest, encode, target_ids
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import capture, device_of, frozen, mlp_out, n_layers, weight_2d

ATTR = "grace_adaptors"


class GraceParams(Strict):
    layer: Optional[int] = None
    """Layer whose MLP output projection is wrapped (default: the middle layer, n_layers // 2)."""
    eps_init: float = Field(default=1.0, gt=0)
    """Radius of a new entry (absolute Euclidean distance in key space; the paper's 1.0 - tune per model)."""
    steps: int = Field(default=100, ge=1)
    """Most Adam steps training an entry's value."""
    lr: float = Field(default=1.0, gt=0)
    """Learning rate of the value training (the paper's edit_lr)."""
    stop_loss: float = Field(default=0.05, ge=0)
    """Stop once the target NLL (per token) is below this."""
    same_key: float = Field(default=1e-4, ge=0)
    """Keys closer than this times (1 + key norm) count as the same key (re-edit overwrites the entry)."""


class Codebook:
    """Keys, values, radii and labels of one wrapped module, and the forward hook doing the lookup."""

    def __init__(self, module: Any) -> None:
        w = weight_2d(module)  # (out, in) for Linear and GPT-2's Conv1D alike
        self.keys = w.new_zeros(0, w.shape[1], dtype=torch.float32)
        self.values = w.new_zeros(0, w.shape[0], dtype=torch.float32)
        self.eps = w.new_zeros(0, dtype=torch.float32)
        self.labels: list[str] = []
        self.ids: list[int] = []
        self.next_id = 0
        self.training: Optional[tuple[int, torch.Tensor]] = None  # (row, trainable value) during an edit
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, module: Any, args: Any, out: Any) -> Any:
        if not self.ids:
            return out
        h = out[0] if isinstance(out, tuple) else out
        x = args[0].reshape(-1, self.keys.shape[1]).float()
        dist = torch.cdist(x, self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        d, idx = dist.min(1)
        hit = d <= self.eps[idx]
        if not bool(hit.any()):
            return out
        vals = self.values
        if self.training is not None:
            j, v = self.training
            vals = torch.cat([vals[:j], v[None], vals[j + 1 :]])
        flat = h.reshape(-1, h.shape[-1])
        new = torch.where(hit[:, None], vals[idx].to(h.dtype), flat).view_as(h)
        return (new,) + tuple(out[1:]) if isinstance(out, tuple) else new

    def add(self, key: torch.Tensor, value: torch.Tensor, eps: float, label: str) -> int:
        self.keys = torch.cat([self.keys, key[None]])
        self.values = torch.cat([self.values, value[None]])
        self.eps = torch.cat([self.eps, self.eps.new_tensor([eps])])
        self.labels.append(label)
        self.ids.append(self.next_id)
        self.next_id += 1
        return len(self.ids) - 1

    def state(self) -> dict[str, Any]:
        return {
            "keys": self.keys.clone(),
            "values": self.values.clone(),
            "eps": self.eps.clone(),
            "labels": list(self.labels),
            "ids": list(self.ids),
            "next_id": self.next_id,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.keys, self.values, self.eps = (state[k].to(self.keys.device).float() for k in ("keys", "values", "eps"))
        self.labels, self.ids, self.next_id = (
            list(state["labels"]),
            [int(i) for i in state["ids"]],
            int(state["next_id"]),
        )

    def remove(self, entry: int) -> None:
        j = self.ids.index(entry)
        keep = [i for i in range(len(self.ids)) if i != j]
        self.keys, self.values, self.eps = self.keys[keep], self.values[keep], self.eps[keep]
        del self.labels[j], self.ids[j]


def place(
    keys: torch.Tensor,
    eps: torch.Tensor,
    labels: list[str],
    key: torch.Tensor,
    label: str,
    eps_init: float,
    same_key: float,
) -> tuple[str, int, float]:
    """The paper's codebook rule for a new (key, label): ("add" | "expand" | "split" | "overwrite", index
    of the nearest entry or -1, distance to it)."""
    if not labels:
        return "add", -1, float("inf")
    d_all = (keys - key).norm(dim=1)
    j = int(d_all.argmin())
    d = float(d_all[j])
    if d <= same_key * (1 + float(key.norm())):
        return ("expand" if labels[j] == label else "overwrite"), j, d
    if d > float(eps[j]) + eps_init:
        return "add", -1, d
    return ("expand" if labels[j] == label else "split"), j, d


@EDITORS.register("grace")
class Grace(Editor):
    """GRACE: a codebook of (key, value, radius) entries replacing one MLP output projection's output
    where the input is near an edited key; no weight changes."""

    Params = GraceParams
    changes_weights = False
    model_ref: Optional[weakref.ref] = None
    """The model last edited: its codebooks are what `state_dict` saves."""

    def state_dict(self) -> dict[str, Any]:
        """The codebooks on the model last edited (keys, values, radii, labels, entry ids per layer)."""
        model = self.model_ref() if self.model_ref is not None else None
        books = model.__dict__.get(ATTR, {}) if model is not None else {}
        return {"codebooks": {str(layer): book.state() for layer, book in books.items()}} if books else {}

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        """Put saved codebooks on `model` (replacing any it has), hooks included."""
        books = model.__dict__.setdefault(ATTR, {})
        for book in books.values():
            book.handle.remove()
        books.clear()
        for layer, saved in state.get("codebooks", {}).items():
            book = Codebook(mlp_out(model, int(layer)))
            book.load(saved)
            books[int(layer)] = book
        if not books:
            model.__dict__.pop(ATTR, None)
        self.model_ref = weakref.ref(model)

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: GraceParams = self.params  # type: ignore[assignment]
        (req,) = requests
        self.model_ref = weakref.ref(model)
        layer = (p.layer if p.layer is not None else n_layers(model) // 2) % n_layers(model)
        module = mlp_out(model, layer)
        books = model.__dict__.setdefault(ATTR, {})
        if layer not in books:
            books[layer] = Codebook(module)
        book: Codebook = books[layer]
        prompt = encode(tok, req.text)
        tgt = target_ids(tok, req.text, req.target_new)
        ids = torch.tensor([prompt + tgt[:-1]], device=device_of(model))
        with torch.no_grad(), capture(module, "input") as seen:
            model(input_ids=ids[:, : len(prompt)])
        key = seen[0][0, -1].float()
        label = req.target_new.strip()
        action, j, d = place(book.keys, book.eps, book.labels, key, label, p.eps_init, p.same_key)
        with torch.no_grad():
            raw = module.forward(key[None].to(module.weight.dtype))[0].float()  # the unwrapped output
        added: list[int] = []
        changed: dict[int, tuple[float, torch.Tensor, str]] = {}
        if j >= 0:
            changed[book.ids[j]] = (float(book.eps[j]), book.values[j].clone(), book.labels[j])
        if action == "expand":
            book.eps[j] = max(float(book.eps[j]), d + 1e-3 * p.eps_init)  # slack for float noise
        elif action == "overwrite":
            book.values[j], book.labels[j] = raw, label
        elif action == "split":
            book.eps[j] = min(float(book.eps[j]), d / 2)
        if action in ("add", "split"):
            j = book.add(key, raw, p.eps_init if action == "add" else min(p.eps_init, d / 2), label)
            added.append(book.ids[j])
        nll, steps = self.train_value(model, book, j, ids, len(prompt), tgt, p)

        def restore() -> None:
            for e in added:
                book.remove(e)
            for e, (eps, value, lab) in changed.items():
                if e in book.ids:
                    i = book.ids.index(e)
                    book.eps[i], book.values[i], book.labels[i] = eps, value, lab
            if not book.ids:
                book.handle.remove()
                books.pop(layer, None)
                if not books:
                    model.__dict__.pop(ATTR, None)

        result = EditResult(
            "grace",
            [req],
            restore=[restore],
            info={
                "layer": layer,
                "action": action,
                "distance": None if d == float("inf") else d,
                "entries": len(book.ids),
                "nll": nll,
                "steps": steps,
            },
        )
        result.note_convergence(req, nll, p.stop_loss)
        return result

    @staticmethod
    def train_value(
        model: Any, book: Codebook, j: int, ids: torch.Tensor, n_prompt: int, tgt: list[int], p: GraceParams
    ) -> tuple[float, int]:
        """Adam on entry j's value alone: NLL of the target tokens, teacher forced, through the lookup."""
        v = book.values[j].clone().requires_grad_(True)
        opt = torch.optim.Adam([v], lr=p.lr)
        t = torch.tensor(tgt, device=ids.device)
        nll, step = torch.tensor(float("inf")), 0
        try:
            with frozen(model):
                for step in range(p.steps + 1):
                    book.training = (j, v)
                    logits = model(input_ids=ids).logits[0, n_prompt - 1 : n_prompt - 1 + len(tgt)]
                    nll = F.cross_entropy(logits.float(), t)
                    if nll.item() < p.stop_loss or step == p.steps or not nll.requires_grad:
                        break
                    opt.zero_grad()
                    nll.backward()
                    opt.step()
        finally:
            book.training = None
        with torch.no_grad():
            book.values[j] = v.detach()
        return nll.item(), step
