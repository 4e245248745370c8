"""Preference margin on held-out pairs: the mean of log p(chosen | prompt) - log p(rejected | prompt) (the
policy's implicit reward margin up to beta and the reference's own margin). Higher is better; in nats."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer
from lifelong.eval.scorers.preference_accuracy import pair_loglikelihoods, pair_records


@SCORERS.register("preference_margin")
class PreferenceMargin(Scorer):
    metric = "preference_margin"
    unit = "nats"
    formats = ("preference",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        lls = pair_loglikelihoods(lm, items)
        margins = lls[:, :1] - lls[:, 1:]
        return margins, pair_records(lls, margins[:, 0])

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return stats[..., 0].mean(axis=-1)
