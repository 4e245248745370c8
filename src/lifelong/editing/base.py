"""The editor interface and `EditResult`: what an edit changed, and how to take it back bit for bit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch
from pydantic import BaseModel

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest


class NoParams(Strict):
    """A method without parameters."""


@dataclass
class EditResult:
    """The exact change one editor call made. `deltas` are the updates added to named parameters (what a
    user inspects or re-applies); `originals` are the parameters' values before the call, so `undo` restores
    the model bit for bit. Editors that change no weights register `restore` callbacks (GRACE removes its
    codebook entries) or a `prompt_fn` (in-context editing rewrites prompts)."""

    method: str
    requests: list[EditRequest]
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    originals: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    restore: list[Callable[[], None]] = field(default_factory=list)
    prompt_fn: Optional[Callable[[str], str]] = None
    undone: bool = False

    def record(self, model: Any, name: str, delta: torch.Tensor) -> None:
        """Add `delta` (parameter layout) to parameter `name`, remembering its first original value."""
        p = dict(model.named_parameters())[name]
        if name not in self.originals:
            self.originals[name] = p.detach().clone()
        with torch.no_grad():
            p.add_(delta.to(p.dtype))
        self.deltas[name] = self.deltas[name] + delta if name in self.deltas else delta.detach().clone()

    def undo(self, model: Any) -> None:
        """Put back every parameter this result changed (bit for bit) and every non-weight change.
        Undo results in reverse order of application when several touched the same parameter."""
        if self.undone:
            raise ValueError(f"this {self.method} edit was already undone")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.originals.items():
                params[name].copy_(value)
        for fn in reversed(self.restore):
            fn()
        self.undone = True

    def merge(self, other: "EditResult") -> None:
        """Fold a later result into this one (the earlier original of a parameter wins)."""
        for name, v in other.originals.items():
            self.originals.setdefault(name, v)
        for name, d in other.deltas.items():
            self.deltas[name] = self.deltas[name] + d if name in self.deltas else d
        self.restore += other.restore
        self.requests += other.requests
        for k, v in other.info.items():
            self.info.setdefault(k, [])
            if isinstance(self.info[k], list):
                self.info[k] += v if isinstance(v, list) else [v]
        if other.prompt_fn is not None:
            self.prompt_fn = other.prompt_fn

    def note_convergence(self, request: EditRequest, loss: float, threshold: float, what: str = "target NLL") -> None:
        """Record whether the optimisation behind one request reached its goal (`loss <= threshold`), so
        callers can warn about an edit that did not converge (with its final loss) and count them."""
        self.info.setdefault("convergence", []).append(
            {
                "id": request.id,
                "subject": request.subject,
                "loss": float(loss),
                "threshold": float(threshold),
                "what": what,
                "converged": bool(loss <= threshold),
            }
        )

    def not_converged(self) -> list[dict]:
        return [c for c in self.info.get("convergence", []) if not c["converged"]]

    def changed_parameters(self) -> int:
        return sum(int((d != 0).sum()) for d in self.deltas.values())


class Editor:
    """An editing method. `edit(model, tok, requests)` changes the model in place and returns what changed.
    Editors with `batched = False` apply a list of requests one after another."""

    Params: ClassVar[type[BaseModel]] = NoParams
    batched: ClassVar[bool] = False
    """Edits many requests in one update (MEMIT)."""
    changes_weights: ClassVar[bool] = True
    """False for editors that leave every base weight as it is (GRACE, in-context)."""
    needs_training: ClassVar[bool] = False
    """Trained once per model before editing (MEND)."""

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        self.params = params if params is not None else self.Params()

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__.lower())

    def edit(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        t0 = time.perf_counter()
        if self.batched:
            result = self.apply(model, tok, requests)
        else:
            result = EditResult(self.name, [])
            for r in requests:
                result.merge(self.apply(model, tok, [r]))
        result.info["seconds"] = time.perf_counter() - t0
        return result

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a sequential run must keep to resume this editor exactly after a restart: tensors, strings,
        numbers and lists/dicts of them (loadable with `torch.load(weights_only=True)`), e.g. the prefixes and
        key statistics shared across edits, AlphaEdit's past keys, GRACE's codebook. Empty: nothing to keep."""
        return {}

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        """Restore what `state_dict` returned (after the model's weights were restored)."""
        if state:
            raise ValueError(f"{self.name} keeps no state, but a saved state was given")
