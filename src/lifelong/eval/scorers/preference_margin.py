"""Preference margin on held-out pairs: the mean of log p(chosen | prompt) - log p(rejected | prompt) (the
policy's implicit reward margin up to beta and the reference's own margin). Higher is better; in nats."""

from __future__ import annotations

from typing import Any

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer
from lifelong.eval.scorers.preference_accuracy import pair_margins


@SCORERS.register("preference_margin")
class PreferenceMargin(Scorer):
    metric = "preference_margin"
    unit = "nats"
    formats = ("preference",)

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        return pair_margins(lm, items)

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return stats[..., 0].mean(axis=-1)
