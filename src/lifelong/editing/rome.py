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

import math
from typing import Any, Literal, Optional, Union

import torch
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.data.edit_requests import EditRequest
from lifelong.editing import EDITORS
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.common import (
    at_subject,
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
    layer: Union[int, Literal["auto", "depth"]] = "auto"
    """Layer whose MLP output projection is edited. `auto`: the layer where causal tracing of the model (over
    the shipped common facts it knows; `lifelong trace`) finds the MLP's indirect effect at the last subject
    token peaking, run once per model and cached; when the model knows fewer than 5 of those facts, `depth`.
    `depth`: about 1/6 of the depth (5 of 30, as ROME's 5 of GPT-J's 28)."""
    start_key: bool = True
    """Also map the subject's key at the start of a text (the subject alone, with nothing before it) to the
    new value, a second equality constraint when it differs from the edit prompt's key. A prompt that begins
    with the subject reaches the layer with other tokens (BPE tokenizers without a beginning-of-text token
    split " Germany" and "Germany", " Somalia" and "Som|al|ia" differently) and at the attention-sink position:
    on SmolLM2 such keys have cosine 0.09-0.53 with the prefix-averaged k*, so paraphrases that open with the
    subject missed the edit. `false`: the paper's rank-one update."""


CONVERGED_NLL = math.log(2)
"""An edit's value optimisation converged when its final target NLL per token is at most ln 2 (the new
target at least as likely as not, per token, in the prompts it was optimised on): the early stop
(`stop_loss`) is stricter, but an edit between the two lands; above ln 2 it is reported as not converged."""

MIN_TRACED_FACTS = 5
"""Causal tracing picks the layer only from at least this many facts the model knows."""


def resolve_layers(
    model: Any, tok: Any, spec: Any, n: int, fallback: list[int], facts: Any = None
) -> tuple[list[int], str]:
    """The edited layers and how they were chosen: an explicit list/int, `depth` (the fallback rule) or `auto`
    (causal tracing over `facts`, default the shipped common facts: ROME's peak layer for n = 1, MEMIT's
    window of n layers centred on the peak)."""
    if isinstance(spec, int):
        return [spec % n_layers(model)], "given"
    if isinstance(spec, list):
        return sorted({lay % n_layers(model) for lay in spec}), "given"
    if spec == "depth":
        return fallback, "depth"
    from lifelong.editing import trace as tr

    try:
        res = tr.trace(model, tok, facts, ["mlp"], scope="last_subject", window=10 if n == 1 else n)["kinds"]["mlp"]
    except ValueError as e:
        if "gets none of" not in str(e):
            raise
        return fallback, "depth (the model knows 0 of the traced facts)"
    if int(res["facts_used"]) < MIN_TRACED_FACTS:
        return fallback, f"depth (the model knows {res['facts_used']} of the traced facts)"
    if n == 1:
        return [int(res["picked_layer"])], "traced"
    return tr.layers_from_trace(res, n, n_layers(model)), "traced"  # the window-n trace above, not a second lookup


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
        self._layers: dict[int, tuple[list[int], str]] = {}

    def layers(self, model: Any, tok: Any, spec: Any, n: int, fallback: list[int]) -> tuple[list[int], str]:
        """Chosen once per model (before its first edit), so sequential edits keep their layers."""
        if id(model) not in self._layers:
            self._layers[id(model)] = resolve_layers(model, tok, spec, n, fallback)
        return self._layers[id(model)]

    def state_dict(self) -> dict[str, Any]:
        """Prefixes, layers and key statistics (one model per editor in a run), for a resumed run."""
        if len(self._templates) > 1 or len(self._layers) > 1:
            raise ValueError("this editor has edited several models; its state is per model")
        state: dict[str, Any] = {}
        for t in self._templates.values():
            state["templates"] = list(t)
        for lays, how in self._layers.values():
            state["layers"], state["layers_how"] = list(lays), how
        for (_, lay), c in self._stats.items():
            state[f"stats.{lay}"] = c
        return state

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        key = id(model)
        if "templates" in state:
            self._templates[key] = list(state["templates"])
        if "layers" in state:
            self._layers[key] = (list(state["layers"]), str(state["layers_how"]))
        for name, c in state.items():
            if name.startswith("stats."):
                self._stats[(key, int(name.split(".", 1)[1]))] = c

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
    exact_at_average: bool = False
    """Which key gets exactly W k + delta: the edit prompt's (ROME's implementation) or the prefix-averaged
    k* (the paper's closed form; r-ROME)."""

    def __init__(self, params: Optional[BaseModel] = None) -> None:
        super().__init__(params)
        self.cache = EditorCache()

    def apply(self, model: Any, tok: Any, requests: list[EditRequest]) -> EditResult:
        p: RomeParams = self.params  # type: ignore[assignment]
        (req,) = requests
        (layer,), how = self.cache.layers(model, tok, p.layer, 1, [default_layer(model)])
        module = mlp_out(model, layer)
        templates = self.cache.templates(model, tok, p)
        stats_log: dict = {}
        c = self.cache.moments(model, tok, [layer], p, stats_log)[layer]
        k_star = mean_at_subject(model, tok, module, [req], templates, "input")[0]
        k = mean_at_subject(model, tok, module, [req], ["{}"], "input")[0]  # the edit prompt itself
        delta, v0, info = optimize_delta(model, tok, req, module, templates, p)
        dirs, exact = [k_star], [k_star if self.exact_at_average else k]
        if p.start_key:  # the subject alone at the start of a text (a causal model's key there ignores the rest)
            k0 = at_subject(model, tok, module, [("{}", req.subject)], "input")[0]
            if float(torch.nn.functional.cosine_similarity(k0, k, 0)) < 0.999:
                dirs.append(k0)
                exact.append(k0)
        # dW = delta a^T with a in the span of C^-1 [k*, k0] and a.k = 1 for every key in `exact`: with one key,
        # ROME's update delta (C^-1 k*)^T / (k^T C^-1 k*); with two, both keys get exactly W k + delta
        u = solve_c(c.to(k.device), torch.stack(dirs, 1), p.ridge)  # (d_in, m)
        g = torch.linalg.solve((torch.stack(exact) @ u).double(), torch.ones(len(exact), dtype=torch.float64))
        dw = torch.outer(delta, (u.double() @ g).float())
        info["keys"] = len(exact)
        if self.exact_at_average:  # ROME's form would have scaled the update by 1 / rome_ratio
            info["rome_ratio"] = float(torch.dot(u[:, 0], k) / torch.dot(u[:, 0], k_star))
        result = EditResult(self.name, [req], info={"layer": layer, "layer_choice": how, "stats": stats_log, **info})
        result.record(model, mlp_out_name(model, layer), to_param_layout(module, dw))
        result.note_convergence(req, info["nll"], CONVERGED_NLL)
        return result

    def state_dict(self) -> dict[str, Any]:
        return self.cache.state_dict()

    def load_state_dict(self, state: dict[str, Any], model: Any) -> None:
        self.cache.load_state_dict(state, model)
