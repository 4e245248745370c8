"""Preference accuracy on held-out pairs: the share of pairs where the model gives the chosen response a
higher log-likelihood than the rejected one, given the prompt (the implicit-reward accuracy of DPO against a
reference cancels to this when the reference is shared; here it is the policy's own ranking). Percent."""

from __future__ import annotations

from typing import Any

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


@SCORERS.register("preference_accuracy")
class PreferenceAccuracy(Scorer):
    metric = "preference_accuracy"
    formats = ("preference",)

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        return (pair_margins(lm, items) > 0).astype(float)


def pair_margins(lm: Any, items: list[dict]) -> np.ndarray:
    """log p(chosen | prompt) - log p(rejected | prompt) per pair, shape (n, 1); the prompt is run once."""
    out = np.zeros((len(items), 1))
    for n, it in enumerate(items):
        ctx = lm.fm.prompt_ids(it["prompt"])
        lc, lr = lm.choice_loglikelihood(ctx, [lm.fm.response_ids(it["chosen"]), lm.fm.response_ids(it["rejected"])])
        out[n, 0] = lc - lr
    return out
