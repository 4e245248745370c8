"""Knowledge-edit scorer: one edit metric of edit requests (docs/editing.md), as a column of the results
matrix, so the matrix shows whether later stages erase the edits and whether edits hurt earlier tasks.

`metric`: efficacy (edit prompt), generalization (paraphrases) or locality (neighbourhood prompts);
`variant`: `cf_prob` (CounterFact: P(new) > P(old) per prompt, mean log-prob per token; locality: the
neighbour's own answer stays more likely than the new target) or `top1` (token accuracy under teacher
forcing of the new target; locality: of the neighbour's own answer — the matrix has no pre-edit run per
row, so this is accuracy of the known answer, not agreement with pre-edit predictions). The column is
named `<metric>[<variant>]`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


class EditScorerParams(Strict):
    metric: Literal["efficacy", "generalization", "locality"] = "efficacy"
    """Which prompts of each request are scored."""
    variant: Literal["cf_prob", "top1"] = "top1"
    """Probability comparison (CounterFact) or top-1 token accuracy (zsRE)."""


@SCORERS.register("edit")
class EditScorer(Scorer):
    Params = EditScorerParams
    formats = ("edit",)

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        p: EditScorerParams = self.params  # type: ignore[assignment]
        self.metric = f"{p.metric}[{p.variant}]"  # type: ignore[misc]

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        from lifelong.data.edit_requests import parse_request
        from lifelong.eval.targets import score_targets

        p: EditScorerParams = self.params  # type: ignore[assignment]
        out = np.full((len(items), 1), np.nan)
        reqs = [parse_request(it) for it in items]
        for n, r in enumerate(reqs):
            if p.metric == "locality":
                pairs = [(x["prompt"], x["target"]) for x in r.neighborhood if x["target"] is not None]
                if not pairs:
                    continue
                own = score_targets(lm.model, lm.tok, pairs)
                if p.variant == "top1":
                    out[n, 0] = np.mean([s["acc"] for s in own])
                else:
                    new = score_targets(lm.model, lm.tok, [(q, r.target_new) for q, _ in pairs])
                    out[n, 0] = np.mean([a["logp"] > b["logp"] for a, b in zip(own, new)])
                continue
            prompts = [r.text] if p.metric == "efficacy" else r.paraphrases
            if not prompts or (p.variant == "cf_prob" and r.target_true is None):
                continue
            new = score_targets(lm.model, lm.tok, [(q, r.target_new) for q in prompts])
            if p.variant == "top1":
                out[n, 0] = np.mean([s["acc"] for s in new])
            else:
                old = score_targets(lm.model, lm.tok, [(q, str(r.target_true)) for q in prompts])
                out[n, 0] = np.mean([a["logp"] > b["logp"] for a, b in zip(new, old)])
        missing = np.isnan(out[:, 0])
        if missing.all():
            raise ValueError(
                f"no request has what {self.metric} needs (paraphrases, neighbourhood prompts or target_true)"
            )
        return out[~missing]
