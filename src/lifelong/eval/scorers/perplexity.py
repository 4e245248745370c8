"""Perplexity of held-out text: exp(total NLL / total tokens) over the task's documents. Lower is better;
the direction is recorded with the score, never negated.

The matrix shows perplexity; the continual-learning metrics (FM, BWT, FWT, AA) of perplexity tasks use its
log, the token-weighted mean negative log-likelihood in nats per token (`metrics_aggregate`): perplexity is
multiplicative, so a difference of perplexities lets one exploding task (3 -> 3000) outweigh every other.
Each document is scored from the separator it follows in pre-training packing (`HFLM.nll`, batched across
documents). An item's audit record holds its summed NLL, its scored tokens and their ratio (nats per token)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


def nll_per_token(stats: np.ndarray) -> np.ndarray:
    """Token-weighted mean NLL (nats per token): stats (..., n, 2) of [summed NLL, tokens] per document."""
    return stats[..., 0].sum(axis=-1) / np.maximum(stats[..., 1].sum(axis=-1), 1)


@SCORERS.register("perplexity")
class Perplexity(Scorer):
    metric = "perplexity"
    higher_is_better = False
    formats = ("text",)
    unit = "perplexity"
    metrics_unit = "nats/token"

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        stats = np.array([[nll, n] for nll, n in lm.nll([it["text"] for it in items])], dtype=float).reshape(-1, 2)
        return stats, [
            {"index": i, "score": nll / max(n, 1), "nll": nll, "tokens": int(n)} for i, (nll, n) in enumerate(stats)
        ]

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return np.exp(nll_per_token(stats))

    @classmethod
    def metrics_aggregate(cls, stats: np.ndarray) -> np.ndarray:
        return nll_per_token(stats)
