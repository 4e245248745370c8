"""ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): a rank-one update of one
layer's MLP output projection W so the subject's key k* maps to a value v* that makes the new target likely.

k* is the projection's input at the subject's last token, averaged over the edit prompt behind random
prefixes the model writes itself; v* = W k* + delta with delta from the value optimization (target NLL +
KL on "<subject> is a" + weight decay, norm clamped; `common.optimize_delta`); C = E[k k^T] over a text
corpus (`stats`). The update is the paper's rank-one solution with direction C^-1 k*, scaled (as in the
authors' implementation) so the edit prompt's own key k gets exactly its value plus delta, W' k = W k + delta:

    W' = W + delta (C^-1 k*)^T / (k^T C^-1 k*)
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    context_templates,
    default_layer,
    mean_at_subject,
    mlp_out,
    mlp_out_name,
    n_layers,
    optimize_delta,
    to_param_layout,
)
from lifelong.editing.stats import StatsParams, second_moments


class ValueParams(Strict):
    n_prefixes: int = Field(default=10, ge=0)
    """Random prefixes (model-written, seeded) the key and the value are averaged over (plus no prefix)."""
    prefix_length: int = Field(default=10, ge=1)
    """Tokens per prefix."""
    v_steps: int = Field(default=20, ge=1)
    """Adam steps of the value optimization."""
    v_lr: float = Field(default=0.5, gt=0)
    """Learning rate of the value optimization."""
    kl_factor: float = Field(default=0.0625, ge=0)
    """Weight of the KL term keeping "<subject> is a" predictions (essence drift)."""
    kl_prompts: list[str] = Field(default_factory=lambda: ["{} is a"])
    """Prompts (with `{}` for the subject) whose next-token distribution the KL term keeps."""
    weight_decay: float = Field(default=0.5, ge=0)
    """Weight of ||delta|| / ||v0||^2 (ROME's form; v0 is the original value)."""
    clamp_norm_factor: float = Field(default=4.0, gt=0)
    """||delta|| is clamped to this times the norm of the original value."""
    stop_loss: float = Field(default=0.05, ge=0)
    """Stop early once the target NLL (per token) is below this."""
    ridge: float = Field(default=1e-4, ge=0)
    """C + ridge * mean(diag C) * I before solving: negligible for a C estimated on a large corpus, but it
    keeps C^-1 from blowing up along directions a small corpus barely covers (measured on the test model:
    1e-6 gives updates 20x larger and sequential edits that wipe out neighbours; 1e-4 keeps them)."""
    stats: StatsParams = Field(default_factory=StatsParams)
    """Key statistics: corpus and token budget."""
    seed: int = 0
    """Seed of the prefix sampling (same seed, same model: same edit)."""


class RomeParams(ValueParams):
    layer: Optional[int] = None
    """Layer whose MLP output projection is edited (default: about 1/6 of the depth; 5 for 30 layers)."""


def solve_c(c: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    eye = torch.eye(c.shape[0], dtype=torch.float64, device=c.device)
    a = c.double() + ridge * float(c.diagonal().mean()) * eye
    return torch.linalg.solve(a, rhs.double()).float()


class EditorCache:
    """Prefixes and key statistics are taken once per model and editor (as the authors' code does), so
    sequential edits share them instead of re-deriving them from the already-edited model."""

    def __init__(self) -> None:
        self._templates: dict[int, list[str]] = {}
        self._stats: dict[tuple[int, int], torch.Tensor] = {}

    def templates(self, model: Any, tok: Any, p: ValueParams) -> list[str]:
        key = id(model)
        if key not in self._templates:
            self._templates[key] = context_templates(model, tok, p.n_prefixes, p.prefix_length, p.seed)
        return self._templates[key]

    def moments(self, model: Any, tok: Any, layers: list[int], p: ValueParams, log: dict) -> dict[int, torch.Tensor]:
        todo = [lay for lay in layers if (id(model), lay) not in self._stats]
        if todo:
            for lay, c in second_moments(model, tok, todo, p.stats, log).items():
                self._stats[(id(model), lay)] = c
        else:
            log.update(hits=len(layers), computed=0, seconds=0.0, in_memory=True)
        return {lay: self._stats[(id(model), lay)] for lay in layers}


@EDITORS.register("rome")
class Rome(Editor):
    """ROME: a rank-one update of one MLP output projection per edit (Meng et al. 2022)."""

    Params = RomeParams

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: RomeParams = self.params  # type: ignore[assignment]
        (req,) = requests
        layer = (p.layer if p.layer is not None else default_layer(model)) % n_layers(model)
        module = mlp_out(model, layer)
        templates = self.cache.templates(model, tok, p)
        stats_log: dict = {}
        c = self.cache.moments(model, tok, [layer], p, stats_log)[layer]
        k_star = mean_at_subject(model, tok, module, [req], templates, "input")[0]
        k = mean_at_subject(model, tok, module, [req], ["{}"], "input")[0]  # the edit prompt itself
        delta, v0, info = optimize_delta(model, tok, req, module, templates, p)
        ck = solve_c(c.to(k.device), k_star, p.ridge)
        dw = torch.outer(delta, ck) / torch.dot(ck, k)
        result = EditResult("rome", [req], info={"layer": layer, "stats": stats_log, **info})
        result.record(model, mlp_out_name(model, layer), to_param_layout(module, dw))
        return result
