"""r-ROME (Gupta, Baskaran, Anumanchipalli 2024, "Rebuilding ROME: Resolving Model Collapse during
Sequential Model Editing"): ROME with one key throughout the update.

ROME's implementation (and `rome.py`) writes the update with the prefix-averaged key k* in the numerator and
the plain edit prompt's key k in the denominator, delta (C^-1 k*)^T / (k^T C^-1 k*). When k is nearly
C^-1-orthogonal to k* the denominator is small and the update explodes: the "disabling edits" that collapse
a sequentially edited model. r-ROME uses k* on both sides, the paper's closed form

    W' = W + (v* - W k*) (C^-1 k*)^T / (k*^T C^-1 k*),    so W' k* = v* exactly,

with v* = W k* + delta: the value optimisation (`common.optimize_delta`) adds delta to the projection's
output at the subject behind each prefix, and W k* is the mean of those outputs (the projection is linear),
so v* - W k* = delta. (The authors' code takes v*'s base from the plain prompt's output instead, mixing the
two again in the numerator; we follow the equation.) Everything else (layer, prefixes, value optimisation,
C and its ridge) is ROME's, from `rome.py`.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from pydantic import BaseModel

from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    default_layer,
    mean_at_subject,
    mlp_out,
    mlp_out_name,
    optimize_delta,
    to_param_layout,
)
from lifelong.editing.rome import CONVERGED_NLL, EditorCache, RomeParams, solve_c


class RRomeParams(RomeParams):
    """ROME's parameters (the update differs, not its inputs)."""


@EDITORS.register("r_rome")
class RRome(Editor):
    """r-ROME: ROME's rank-one update with the averaged key k* in numerator and denominator, so W' k* = v*
    exactly and no edit can blow up through a small denominator (Gupta et al. 2024)."""

    Params = RRomeParams

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: RRomeParams = self.params  # type: ignore[assignment]
        (req,) = requests
        (layer,), how = self.cache.layers(model, tok, p.layer, 1, [default_layer(model)])
        module = mlp_out(model, layer)
        templates = self.cache.templates(model, tok, p)
        stats_log: dict = {}
        c = self.cache.moments(model, tok, [layer], p, stats_log)[layer]
        k_star = mean_at_subject(model, tok, module, [req], templates, "input")[0]
        delta, v0, info = optimize_delta(model, tok, req, module, templates, p)
        ck = solve_c(c.to(k_star.device), k_star, p.ridge)
        denom = torch.dot(ck, k_star)
        dw = torch.outer(delta, ck) / denom
        k = mean_at_subject(model, tok, module, [req], ["{}"], "input")[0]  # the edit prompt alone
        result = EditResult("r_rome", [req], info={"layer": layer, "layer_choice": how, "stats": stats_log})
        # ROME's asymmetric form would have scaled this update by 1 / rome_ratio (a disabling edit: near 0)
        result.info["rome_ratio"] = float(torch.dot(ck, k) / denom)
        result.info.update(info)
        result.note_convergence(req, info["nll"], CONVERGED_NLL)
        result.record(model, mlp_out_name(model, layer), to_param_layout(module, dw))
        return result

    def state_dict(self) -> dict[str, Any]:
        return self.cache.state_dict()

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        self.cache.load_state_dict(state, model)
