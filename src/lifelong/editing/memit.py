"""MEMIT (Meng et al. 2023, "Mass-Editing Memory in a Transformer"): many edits in one update, spread over a
range of layers' MLP output projections.

For each request, a target hidden state z_i = h_i + delta_i at the last layer L of the range (residual
stream at the subject's last token), delta_i from the same value optimization as ROME. Then, layer by layer
from the first, with keys K (inputs of the layer's MLP output projection, averaged over prefixes) and the
current h at L under the already-updated weights:

    R  = (z - h) / (layers left, this one included)
    dW = R K^T (lambda C + K K^T)^-1          (C = E[k k^T] over a corpus: the preserved memories)

With `start_key` (default) K and R get a second column per request: the subject's key at the start of a text
and, as its residual, that prompt's own hidden state at L plus the request's delta, minus its current one
(docs/decisions.md).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from pydantic import BaseModel, Field

from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    at_subject,
    layer_module,
    mean_at_subject,
    mlp_out,
    mlp_out_name,
    n_layers,
    optimize_delta,
    to_param_layout,
)
from lifelong.editing.rome import CONVERGED_NLL, EditorCache, ValueParams

GPTJ_LAMBDA_PER_KEY_DIM = 15000.0 / 16384
"""MEMIT's lambda for GPT-J (15000) over its MLP key width (16384)."""


class MemitParams(ValueParams):
    layers: Union[list[int], Literal["auto", "depth"]] = "auto"
    """Edited layers, ascending. `auto`: the window of n MLP layers (n = the `depth` rule's count, 5 of 30)
    centred where causal tracing of the model finds their joint indirect effect at the last subject token
    peaking (run once per model, cached; `lifelong trace`), or `depth` when the model knows fewer than 5 of
    the traced facts. `depth`: from about 13% to 27% of the depth (4-8 of 30, as MEMIT's 3-8 of GPT-J's 28)."""
    mom2_update_weight: Optional[float] = Field(default=None, gt=0)
    """lambda: weight of the preserved keys' second moment C against the new keys K in (lambda C + K K^T).
    Default: 15000 / 16384 x the key width (1,406 for SmolLM2's 1,536). A key k drawn like C's keys has
    E[k^T C^-1 k] = its width d, so one layer's update realises about d / (lambda + d) of its share of the
    residual; MEMIT's 15000 on GPT-J (d = 16384) realises about half, and the same lambda on a model with
    1,536-wide keys only 9% (measured on SmolLM2, 5 edits in one batch: efficacy 60 with 15000, 100 with
    1,500). The default keeps GPT-J's balance on every width."""
    clamp_norm_factor: float = Field(default=0.75, gt=0)
    """||delta|| clamp relative to the original hidden state (MEMIT: 0.75)."""
    v_steps: int = Field(default=25, ge=1)
    start_key: bool = True
    """Also fit each subject's key at the start of a text (the subject alone, nothing before it: the key of
    every prompt that opens with the subject, the edit prompt included) as a second column of K, its target
    the same delta added to that prompt's own hidden state at the last layer. MEMIT's key averages the
    prompt over prefixes, in which the subject is mid-text; on SmolLM2 the start-of-text key has cosine
    0.09-0.53 with it (the attention-sink position, other BPE tokens), and the more edits share a batch,
    the less an update fitted to the averaged keys carries over to it (one batch of 100: efficacy 79 with
    the paper's keys). ROME's `start_key` is the same constraint. `false`: the paper's keys."""


def default_layers(model: Any) -> list[int]:
    n = n_layers(model)
    lo, hi = round(0.13 * n), round(0.27 * n)
    return list(range(lo, max(lo, hi) + 1))


@EDITORS.register("memit")
class Memit(Editor):
    """MEMIT: many edits in one update spread over a range of MLP layers (Meng et al. 2023)."""

    Params = MemitParams
    batched = True

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        layers, how = self.layers(model, tok)
        zs, infos = self.targets(model, tok, requests, layers)
        return self.update(model, tok, requests, layers, zs, infos, how)

    def layers(self, model: Any, tok: Any) -> tuple[list[int], str]:
        """The edited layers and how they were chosen (causal tracing, cached, or the depth rule)."""
        p: MemitParams = self.params  # type: ignore[assignment]
        fallback = default_layers(model)
        return self.cache.layers(model, tok, p.layers, len(fallback), fallback)

    def targets(
        self, model: Any, tok: Any, requests: list[EditRequest], layers: list[int]
    ) -> tuple[torch.Tensor, list[dict]]:
        """Per request, the target hidden state z = h + delta at the last edited layer (on the model as it is:
        MEMIT computes every target before any layer changes). Returns (zs (n, d), value-optimisation figures)."""
        p: MemitParams = self.params  # type: ignore[assignment]
        last = layer_module(model, layers[-1])
        templates = self.cache.templates(model, tok, p)
        z, infos = [], []
        for req in requests:
            delta, h0, info = optimize_delta(model, tok, req, last, templates, p)
            z.append(h0 + delta)
            infos.append(info)
        return torch.stack(z), infos

    def update(
        self,
        model: Any,
        tok: Any,
        requests: list[EditRequest],
        layers: list[int],
        zs: torch.Tensor,
        infos: list[dict],
        how: str = "given",
    ) -> EditResult:
        """Spread the residuals z - h over `layers`, first to last (MEMIT's Algorithm 1, lines 8-14)."""
        p: MemitParams = self.params  # type: ignore[assignment]
        last = layer_module(model, layers[-1])
        templates = self.cache.templates(model, tok, p)
        stats_log: dict = {}
        cs = self.cache.moments(model, tok, layers, p, stats_log)
        result = EditResult(
            "memit", list(requests), info={"layers": layers, "layer_choice": how, "stats": stats_log, "values": infos}
        )
        for req, info in zip(requests, infos):
            result.note_convergence(req, info["nll"], CONVERGED_NLL)
        start = bare0 = None
        lam = 0.0
        subjects = [("{}", r.subject) for r in requests]
        for i, lay in enumerate(layers):
            module = mlp_out(model, lay)
            keys = mean_at_subject(model, tok, module, requests, templates, "input")  # (n, d_in)
            cur = mean_at_subject(model, tok, last, requests, templates, "output")  # (n, d)
            if start is None:
                start = cur
            resid = (zs - cur) / (len(layers) - i)
            if p.start_key or bare0 is None:
                bare = at_subject(model, tok, last, subjects, "output")
                bare0 = bare if bare0 is None else bare0
            if p.start_key:  # the subject at the start of a text: its own hidden state + the same delta
                keys = torch.cat([keys, at_subject(model, tok, module, subjects, "input")])
                resid = torch.cat([resid, (bare0 + (zs - start) - bare) / (len(layers) - i)])
            c = cs[lay].to(keys.device).double()
            lam = p.mom2_update_weight if p.mom2_update_weight is not None else GPTJ_LAMBDA_PER_KEY_DIM * c.shape[0]
            a = lam * c + keys.double().T @ keys.double()
            a = a + p.ridge * float(a.diagonal().mean()) * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
            adj = torch.linalg.solve(a, keys.double().T)  # (d_in, n)
            dw = (resid.double().T @ adj.T).float()  # (d_out, d_in)
            result.record(model, mlp_out_name(model, lay), to_param_layout(module, dw))
        result.info["lambda"] = lam
        # how much of each request's residual z - h at the last layer the updates realised (1: all of it)
        final = mean_at_subject(model, tok, last, requests, templates, "output")
        assert start is not None
        gap0 = (zs - start).norm(dim=1).clamp_min(1e-12)
        result.info["realised"] = (1 - (zs - final).norm(dim=1) / gap0).tolist()
        # the same at the start of a text (the subject alone): its hidden state against bare0 + delta
        final_bare = at_subject(model, tok, last, subjects, "output")
        assert bare0 is not None
        result.info["realised_start"] = (1 - (bare0 + (zs - start) - final_bare).norm(dim=1) / gap0).tolist()
        return result

    def state_dict(self) -> dict[str, Any]:
        return self.cache.state_dict()

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        self.cache.load_state_dict(state, model)
