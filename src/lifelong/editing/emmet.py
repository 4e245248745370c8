"""EMMET (Gupta, Sajnani, Anumanchipalli 2024, "A Unified Framework for Model Editing"): Equality-constrained
Mass Model Editing in Transformers, ROME's equality constraint for a batch of edits in one layer.

ROME preserves the keys of a corpus (least squares weighted by C = E[k k^T]) subject to one edited key
mapping exactly to its value; MEMIT makes the edits a least-squares term too (lambda C + K K^T), which leaves
a residual. EMMET keeps every edit as an equality constraint: for a batch with keys K_E (columns: the
projection's input at each subject's last token, averaged over the random prefixes) and target values V_E,

    dW = (V_E - W K_E) (K_E^T C^-1 K_E)^-1 K_E^T C^-1,      so W' K_E = V_E,

with V_E - W K_E = one column delta_i per edit from the value optimisation (`common.optimize_delta` at the
layer's output, MEMIT's target: the residual stream after the edited layer, clamped relative to its norm;
the equality makes the layer reach exactly that hidden state, averaged over prefixes). As in the authors'
code, D = K_E^T C^-1 K_E gets `emmet_lambda` * I added when the batch has more than one edit (near-duplicate
keys make D ill-conditioned); `mom2_update_weight` scales C as in their code, which only changes how strong
that regularisation is. With `emmet_lambda` = 0 the constraint holds to float rounding.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from pydantic import BaseModel, Field

from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    default_layer,
    layer_module,
    mean_at_subject,
    mlp_out,
    mlp_out_name,
    optimize_delta,
    to_param_layout,
)
from lifelong.editing.rome import CONVERGED_NLL, EditorCache, ValueParams, solve_c


class EmmetParams(ValueParams):
    layer: Union[int, Literal["auto", "depth"]] = "auto"
    """Edited layer, chosen as ROME's (the EMMET paper edits ROME's layer): `auto` by causal tracing of the
    model, `depth` about 1/6 of the depth, or a number."""
    clamp_norm_factor: float = Field(default=0.75, gt=0)
    """||delta|| clamp relative to the layer's original output (the authors' GPT-2 XL / GPT-J setting;
    their Llama-2 setting is 4)."""
    v_steps: int = Field(default=25, ge=1)
    """Adam steps of the value optimization (the authors: 25; 20 for GPT-2 XL)."""
    emmet_lambda: float = Field(default=0.1, ge=0)
    """Added to the diagonal of D = K_E^T C^-1 K_E for batches of two or more (the authors' 0.1): trades
    exact equality for stability when edited keys are nearly parallel. 0: exact equality."""
    mom2_update_weight: float = Field(default=1.0, gt=0)
    """C is scaled by this before D is formed (the authors' code: 1 for Llama-2 and GPT-J, 1000 for GPT-2
    XL); with `emmet_lambda` = 0 it changes nothing, otherwise it strengthens the regularisation."""


@EDITORS.register("emmet")
class Emmet(Editor):
    """EMMET: a batch of edits in one MLP layer, each edited key mapped exactly to its value while the
    corpus keys are preserved in C's least-squares sense (batched ROME; Gupta et al. 2024)."""

    Params = EmmetParams
    batched = True

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: EmmetParams = self.params  # type: ignore[assignment]
        (layer,), how = self.cache.layers(model, tok, p.layer, 1, [default_layer(model)])
        module = mlp_out(model, layer)
        templates = self.cache.templates(model, tok, p)
        result = EditResult("emmet", list(requests), info={"layer": layer, "layer_choice": how})
        values, deltas = [], []
        for req in requests:
            delta, _, info = optimize_delta(model, tok, req, layer_module(model, layer), templates, p)
            values.append(info)
            deltas.append(delta)
            result.note_convergence(req, info["nll"], CONVERGED_NLL)
        resid = torch.stack(deltas).double()  # (n, d_out): V_E - W K_E, one row per edit
        stats_log: dict = {}
        c = self.cache.moments(model, tok, [layer], p, stats_log)[layer]
        keys = mean_at_subject(model, tok, module, requests, templates, "input")  # (n, d_in)
        cinv_k = solve_c(p.mom2_update_weight * c.to(keys.device), keys.T, p.ridge).double()  # (d_in, n)
        d = keys.double() @ cinv_k  # K_E^T C^-1 K_E
        if len(requests) > 1 and p.emmet_lambda > 0:
            d = d + p.emmet_lambda * torch.eye(len(requests), dtype=d.dtype, device=d.device)
        coef = torch.linalg.solve(d, resid)  # (n, d_out) = D^-1 (V_E - W K_E)^T
        dw = coef.T @ cinv_k.T  # (d_out, d_in)
        hit = dw @ keys.double().T  # what the update adds at the edited keys (d_out, n)
        result.info.update(
            stats=stats_log,
            values=values,
            constraint_residual=float((hit - resid.T).norm() / resid.norm().clamp_min(1e-30)),
            d_condition=float(torch.linalg.cond(d)),
        )
        result.record(model, mlp_out_name(model, layer), to_param_layout(module, dw.float()))
        return result

    def state_dict(self) -> dict[str, Any]:
        return self.cache.state_dict()

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        self.cache.load_state_dict(state, model)
