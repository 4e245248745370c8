"""Perplexity of held-out text: exp(total NLL / total tokens) over the task's documents. Lower is better;
the direction is recorded with the score, never negated."""

from __future__ import annotations

from typing import Any

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


@SCORERS.register("perplexity")
class Perplexity(Scorer):
    metric = "perplexity"
    higher_is_better = False
    formats = ("text",)

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        return np.array([[nll, n] for nll, n in lm.nll([it["text"] for it in items])], dtype=float)

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return np.exp(stats[..., 0].sum(axis=-1) / np.maximum(stats[..., 1].sum(axis=-1), 1))
