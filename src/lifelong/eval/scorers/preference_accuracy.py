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
        out = np.zeros((len(items), 1))
        for n, it in enumerate(items):
            ctx = lm.fm.prompt_ids(it["prompt"])
            conts = [lm.fm.response_ids(it["chosen"]), lm.fm.response_ids(it["rejected"])]
            lc, lr = lm.choice_loglikelihood(ctx, conts)
            out[n, 0] = float(lc > lr)
        return out
