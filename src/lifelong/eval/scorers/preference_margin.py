"""Preference margin on held-out pairs: the mean of log p(chosen | prompt) - log p(rejected | prompt) (the
policy's implicit reward margin up to beta and the reference's own margin). Higher is better; in nats."""
from __future__ import annotations

from typing import Any

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


@SCORERS.register("preference_margin")
class PreferenceMargin(Scorer):
    metric = "preference_margin"
    formats = ("preference",)

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        out = np.zeros((len(items), 1))
        for n, it in enumerate(items):
            ctx = lm.fm.prompt_ids(it["prompt"])
            lc, lr = lm.choice_loglikelihood(ctx, [lm.fm.response_ids(it["chosen"]), lm.fm.response_ids(it["rejected"])])
            out[n, 0] = lc - lr
        return out

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return stats[..., 0].mean(axis=-1)
