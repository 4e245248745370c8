"""AlphaEdit (Fang et al., ICLR 2025, "AlphaEdit: Null-Space Constrained Knowledge Editing for Language
Models"): MEMIT's layer range and residual spreading, with every update projected onto the null space of the
preserved knowledge's keys, so sequential edits stop eroding what the model knew.

Preserved keys K0 are summarised by their second moment C = E[k k^T] over a corpus (the statistics ROME and
MEMIT use, `stats`). P = U U^T, where U are C's eigenvectors whose eigenvalues are below
`nullspace_threshold` (the authors' code: an absolute 2e-2 on C's eigenvalues, the paper: 1e-2), so
P K0 ~ 0. Per layer, with the batch's keys K1 (averaged over prefixes), its residual R (MEMIT's: target
hidden state minus the current one, divided among the remaining layers) and Kp Kp^T, the keys of every
earlier edit this editor made (accumulated across calls, computed after each call with the updated model,
as the authors do):

    Delta = R K1^T P (Kp Kp^T P + K1 K1^T P + l2 I)^-1,      Delta = Delta P, so Delta K0 ~ 0

(the paper writes I where the authors' code adds L2 = 10 I; `l2`). There is no lambda C term: the projection
does the preserving, and the earlier edits' keys enter only through Kp Kp^T. P is computed once, from the
model as it was at the editor's first call, and kept (as the authors compute it once before editing).
`state_dict` holds the prefixes, P and Kp Kp^T per layer, so an interrupted sequential run resumes exactly.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from pydantic import BaseModel, Field

from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    layer_module,
    mean_at_subject,
    mlp_out,
    mlp_out_name,
    n_layers,
    optimize_delta,
    to_param_layout,
)
from lifelong.editing.memit import default_layers
from lifelong.editing.rome import CONVERGED_NLL, EditorCache, ValueParams

STATE = ("templates", "layers", "layers_how", "projections", "past", "edits", "key_energy")


class AlphaEditParams(ValueParams):
    layers: Union[list[int], Literal["auto", "depth"]] = "auto"
    """Edited layers, chosen as MEMIT's: `auto` a window centred where causal tracing of the model peaks,
    `depth` about 13% to 27% of the depth (4-8 of 30; the authors use 4-8 of Llama3-8B's 32), or a list."""
    nullspace_threshold: float = Field(default=2e-2, gt=0)
    """Eigenvalues of C (the mean of k k^T over the corpus) below this span the null space the update is
    projected onto (the authors' code: 2e-2 for every model; the paper states 1e-2). Absolute, so it depends
    on the keys' scale: `info["null_dims"]` reports the null space's dimension per layer."""
    nullspace_energy: Optional[float] = Field(default=None, gt=0, lt=1)
    """Instead of the absolute threshold: the null space is spanned by the eigenvectors with the smallest
    eigenvalues whose sum is at most this fraction of trace(C) (the authors' advice when the absolute
    threshold selects all or none, AlphaEdit issue 38). Scale-free: `1e-3` keeps the projected keys'
    energy below 0.1% of the corpus keys' on any model."""
    l2: float = Field(default=10.0, ge=0)
    """l2 * I in the solve (the authors' code: 10; the paper's equation: 1): keeps the update bounded when
    the projected keys are small. Absolute: it acts against the keys' energy E||k||^2 = trace(C), reported
    per layer in `info["key_energy"]` (30 on the test model, where 0.3 works and 10 lands nothing)."""
    clamp_norm_factor: float = Field(default=0.75, gt=0)
    """||delta|| clamp relative to the original hidden state (MEMIT and AlphaEdit: 0.75)."""
    v_steps: int = Field(default=25, ge=1)
    """Adam steps of the value optimization (the authors: 25)."""
    ridge: float = Field(default=1e-4, ge=0)
    """Not used by AlphaEdit (it never inverts C; `l2` regularises its solve)."""


def null_space_projection(
    c: torch.Tensor, threshold: float, energy: Optional[float] = None
) -> tuple[torch.Tensor, int]:
    """P = U U^T (float64) and its rank, U the eigenvectors of C with eigenvalue below `threshold`, or (with
    `energy`) the smallest ones whose eigenvalues sum to at most that fraction of the trace."""
    vals, vecs = torch.linalg.eigh(c.double())  # ascending
    if energy is None:
        keep = vals < threshold
    else:
        keep = torch.cumsum(vals.clamp_min(0), 0) <= energy * float(vals.clamp_min(0).sum())
    u = vecs[:, keep]
    return u @ u.T, int(u.shape[1])


@EDITORS.register("alphaedit")
class AlphaEdit(Editor):
    """AlphaEdit: MEMIT's multi-layer update projected onto the null space of preserved keys, solved
    against the keys of every earlier edit (Fang et al. 2025)."""

    Params = AlphaEditParams
    batched = True

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()
        self.model_id: Optional[int] = None
        self.projections: dict[int, torch.Tensor] = {}
        """P per layer (kept in float32, used in float64; so a resumed run computes the same updates)."""
        self.past: dict[int, torch.Tensor] = {}
        """Kp Kp^T per layer (float32, summed in float64): the keys of every earlier edit, after it was made."""
        self.edits = 0
        self.key_energy: dict[int, float] = {}
        """trace(C) = E||k||^2 per layer: the scale `l2` and `nullspace_threshold` act against."""

    def _layers(self, model: Any, tok: Any) -> tuple[list[int], str]:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        fallback = default_layers(model)
        return self.cache.layers(model, tok, p.layers, len(fallback), fallback)

    def _projections(self, model: Any, tok: Any, layers: list[int], log: dict) -> dict[int, torch.Tensor]:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        todo = [lay for lay in layers if lay not in self.projections]
        if todo:
            cs = self.cache.moments(model, tok, todo, p, log)
            for lay in todo:
                proj, dims = null_space_projection(cs[lay], p.nullspace_threshold, p.nullspace_energy)
                if dims == 0:
                    vals = torch.linalg.eigvalsh(cs[lay].double())
                    rule = (
                        f"nullspace_threshold {p.nullspace_threshold:g}; the smallest is {float(vals[0]):.3g}"
                        if p.nullspace_energy is None
                        else f"nullspace_energy {p.nullspace_energy:g} of the trace; the smallest is "
                        f"{float(vals[0] / vals.clamp_min(0).sum()):.3g} of it"
                    )
                    raise ValueError(
                        f"alphaedit: layer {lay}: the null space is empty (no eigenvalue of the key statistics C "
                        f"is below {rule}), so every update would be projected to zero; raise "
                        f"alphaedit.{rule.split()[0]} above it"
                    )
                self.projections[lay] = proj.float()
                self.key_energy[lay] = float(cs[lay].double().trace())
        return {lay: self.projections[lay] for lay in layers}

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        if self.model_id != id(model):  # past keys and projections belong to one model
            self.model_id, self.projections, self.past, self.edits, self.key_energy = id(model), {}, {}, 0, {}
        layers, how = self._layers(model, tok)
        last = layer_module(model, layers[-1])
        templates = self.cache.templates(model, tok, p)
        stats_log: dict = {}
        projs = self._projections(model, tok, layers, stats_log)  # first: a bad threshold stops here
        result = EditResult("alphaedit", list(requests), info={"layers": layers, "layer_choice": how})
        z, values = [], []
        for req in requests:
            delta, h0, info = optimize_delta(model, tok, req, last, templates, p)
            z.append(h0 + delta)
            values.append(info)
            result.note_convergence(req, info["nll"], CONVERGED_NLL)
        zs = torch.stack(z)
        for i, lay in enumerate(layers):
            module = mlp_out(model, lay)
            keys = mean_at_subject(model, tok, module, requests, templates, "input").double()  # (n, d_in)
            cur = mean_at_subject(model, tok, last, requests, templates, "output")  # (n, d)
            resid = ((zs - cur) / (len(layers) - i)).double()
            proj = projs[lay].to(keys.device).double()
            eye = torch.eye(proj.shape[0], dtype=proj.dtype, device=proj.device)
            moment = keys.T @ keys
            if lay in self.past:
                moment = moment + self.past[lay].to(keys.device).double()
            # Delta^T = (P M + l2 I)^-1 P K1 R^T  (the transpose of the paper's form, as a solve)
            dw_t = torch.linalg.solve(proj @ moment + p.l2 * eye, proj @ keys.T @ resid)
            result.record(model, mlp_out_name(model, lay), to_param_layout(module, dw_t.T.float()))
        for lay in layers:  # the edits' keys under the updated model join the preserved ones
            keys = mean_at_subject(model, tok, mlp_out(model, lay), requests, templates, "input").double()
            moment = (keys.T @ keys).cpu()
            self.past[lay] = (self.past[lay].double() + moment if lay in self.past else moment).float()
        self.edits += len(requests)
        result.info.update(
            stats=stats_log,
            values=values,
            null_dims={lay: int(round(float(projs[lay].trace()))) for lay in layers},
            key_energy=dict(self.key_energy),
            past_edits=self.edits,
        )
        return result

    def state_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.cache.state_dict().items() if not k.startswith("stats.")}  # P replaces C
        out["projections"] = {str(lay): t.cpu().clone() for lay, t in self.projections.items()}
        out["past"] = {str(lay): t.cpu().clone() for lay, t in self.past.items()}
        out["edits"] = self.edits
        out["key_energy"] = {str(lay): v for lay, v in self.key_energy.items()}
        return out

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        unknown = sorted(set(state) - set(STATE))
        if unknown:
            raise ValueError(
                f"alphaedit: the saved editor state has unknown entry {unknown[0]!r} (expected {', '.join(STATE)}); "
                "it was saved by another method or version: start the run afresh"
            )
        if not state:
            return
        saved = sorted(int(k) for k in state.get("projections", {}))
        wanted = sorted({lay % n_layers(model) for lay in p.layers}) if isinstance(p.layers, list) else saved
        if saved != wanted:
            raise ValueError(
                f"alphaedit: the saved editor state is for layers {saved}, but this editor edits layers {wanted}; "
                "resume with the same alphaedit.layers"
            )
        self.cache.load_state_dict(state, model)
        self.model_id = id(model)
        self.projections = {int(k): v.float() for k, v in state.get("projections", {}).items()}
        self.past = {int(k): v.float() for k, v in state.get("past", {}).items()}
        self.edits = int(state.get("edits", 0))
        self.key_energy = {int(k): float(v) for k, v in state.get("key_energy", {}).items()}
