"""Preference accuracy on held-out pairs: the share of pairs where the model gives the chosen response a
higher log-likelihood than the rejected one, given the prompt (the implicit-reward accuracy of DPO against a
reference cancels to this when the reference is shared; here it is the policy's own ranking). Percent."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


@SCORERS.register("preference_accuracy")
class PreferenceAccuracy(Scorer):
    metric = "preference_accuracy"
    formats = ("preference",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        lls = pair_loglikelihoods(lm, items)
        out = (lls[:, :1] - lls[:, 1:] > 0).astype(float)
        return out, pair_records(lls, out[:, 0])


def pair_loglikelihoods(lm: Any, items: list[dict]) -> np.ndarray:
    """[log p(chosen | prompt), log p(rejected | prompt)] per pair, shape (n, 2); every prompt runs once, the
    pairs in batches (`HFLM.choice_loglikelihoods`)."""
    reqs = [
        (lm.fm.prompt_ids(it["prompt"]), [lm.fm.response_ids(it["chosen"]), lm.fm.response_ids(it["rejected"])])
        for it in items
    ]
    return np.array(lm.choice_loglikelihoods(reqs), dtype=float).reshape(len(items), 2)


def pair_records(lls: np.ndarray, scores: np.ndarray) -> list[dict]:
    """The audit record of each pair (`Scorer.score_details`): both log-likelihoods, the margin, which
    response the model prefers."""
    return [
        {
            "index": n,
            "score": float(s),
            "prediction": "chosen" if c > r else "rejected",
            "gold": "chosen",
            "chosen_loglikelihood": float(c),
            "rejected_loglikelihood": float(r),
            "margin": float(c - r),
        }
        for n, ((c, r), s) in enumerate(zip(lls, scores))
    ]
