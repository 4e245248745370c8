"""Knowledge-edit scorer: one edit metric of edit requests (docs/editing.md), as a column of the results
matrix, so the matrix shows whether later stages erase the edits and whether edits hurt earlier tasks.

`metric`: efficacy (edit prompt), generalization (paraphrases) or locality (neighbourhood prompts);
`variant`: `cf_prob` (CounterFact: P(new) > P(old) per prompt, mean log-prob per token; locality: the
neighbour's own answer stays more likely than the new target) or `top1` (token accuracy under teacher
forcing of the new target; locality: of the neighbour's own answer — the matrix has no pre-edit run per
row, so this is accuracy of the known answer, not agreement with pre-edit predictions). The column is
named `<metric>[<variant>]`.

With `cf_prob`, each request's magnitude is kept beside its score (`also_reported`: `magnitude[cf_prob]`):
ROME's efficacy / paraphrase / neighbourhood magnitude (Meng et al. 2022, sec. 3; `experiments/summarize.py`),
the mean over the request's prompts of P(new) - P(old) (locality: P(neighbour's answer) - P(new)), each P the
exponential of the mean log-probability per target token, in percentage points.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch
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

    def also_reported(self) -> tuple[str, ...]:
        """`cf_prob`: the magnitude of the probability difference (column 1)."""
        return ("magnitude[cf_prob]",) if self.params.variant == "cf_prob" else ()  # type: ignore[attr-defined]

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        """All requests' (prompt, target) pairs are scored in one batched pass (`score_targets` with the LM's
        batch size), then grouped back per request; a request without what the metric needs is left out."""
        from lifelong.data.edit_requests import parse_request
        from lifelong.eval.targets import score_targets

        p: EditScorerParams = self.params  # type: ignore[assignment]
        # per request: [(prompt, target the score counts, target it is compared with or None)]
        plans: list[list[tuple[str, str, Optional[str]]]] = []
        for r in (parse_request(it) for it in items):
            if p.metric == "locality":
                own = [(x["prompt"], str(x["target"])) for x in r.neighborhood if x["target"] is not None]
                plans.append([(q, t, None if p.variant == "top1" else r.target_new) for q, t in own])
                continue
            prompts = [r.text] if p.metric == "efficacy" else list(r.paraphrases)
            if p.variant == "cf_prob" and r.target_true is None:
                prompts = []
            other = None if p.variant == "top1" else str(r.target_true)
            plans.append([(q, r.target_new, other) for q in prompts])
        pairs = [(q, t) for plan in plans for q, t, _ in plan]
        pairs += [(q, o) for plan in plans for q, _, o in plan if o is not None]
        with torch.no_grad():  # scoring only: no graph kept
            scored = iter(score_targets(lm.model, lm.tok, pairs, batch_size=lm.batch_size) if pairs else [])
        first = [[next(scored) for _ in plan] for plan in plans]
        versus = [[next(scored) if o is not None else None for _, _, o in plan] for plan in plans]
        out = np.full((len(items), 2 if p.variant == "cf_prob" else 1), np.nan)
        records: list[dict] = []
        for n, (plan, a, b) in enumerate(zip(plans, first, versus)):
            if not plan:
                continue
            hits = [s["acc"] if v is None else float(s["logp"] > v["logp"]) for s, v in zip(a, b)]
            out[n, 0] = float(np.mean(hits))
            if p.variant == "cf_prob":  # ROME's magnitude: P(counted) - P(compared), P = exp(mean log-prob)
                out[n, 1] = float(np.mean([np.exp(s["logp"]) - np.exp(v["logp"]) for s, v in zip(a, b) if v]))
            records.append(
                {
                    "index": n,
                    "score": out[n, 0],
                    "prediction": [lm.tok.decode(s["preds"]) for s in a],
                    "gold": [t for _, t, _ in plan],
                    "prompts": [q for q, _, _ in plan],
                    "logp": [s["logp"] for s in a],  # mean log-prob per target token
                    "token_accuracy": [s["acc"] for s in a],
                    "compared_with": [o for _, _, o in plan],
                    "compared_logp": [None if v is None else v["logp"] for v in b],
                    "hits": hits,
                    **({"magnitude": out[n, 1]} if p.variant == "cf_prob" else {}),
                }
            )
        missing = np.isnan(out[:, 0])
        if missing.all():
            raise ValueError(
                f"no request has what {self.metric} needs (paraphrases, neighbourhood prompts or target_true)"
            )
        return out[~missing], records
