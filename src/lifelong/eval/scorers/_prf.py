"""Micro precision, recall and F1 from per-example (tp, fp, fn) counts, for the extraction scorers (`entity_f1`,
`triple_f1`): corpus-level, so each example keeps its counts as statistics columns 0-2 and the score is computed
from their sums (a bootstrap resamples examples and sums again). seqeval's convention: a ratio whose
denominator is 0 is 0, and F1 is 0 when precision and recall are both 0."""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np

from lifelong.eval.scorers.base import Scorer


def sums(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn) summed over examples: stats (..., n, 3+) -> three arrays (...)."""
    s = np.asarray(stats, dtype=float)
    return s[..., 0].sum(axis=-1), s[..., 1].sum(axis=-1), s[..., 2].sum(axis=-1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, 100.0 * num / np.where(den > 0, den, 1.0), 0.0)


def f1(stats: np.ndarray) -> np.ndarray:
    """Micro F1 in percent: 2 tp / (2 tp + fp + fn), the harmonic mean of micro precision and recall."""
    tp, fp, fn = sums(stats)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def precision(stats: np.ndarray) -> np.ndarray:
    tp, fp, _ = sums(stats)
    return _ratio(tp, tp + fp)


def recall(stats: np.ndarray) -> np.ndarray:
    tp, _, fn = sums(stats)
    return _ratio(tp, tp + fn)


def counts(predicted: Sequence[Hashable], gold: Sequence[Hashable], extra_fp: int = 0) -> tuple[int, int, int]:
    """(tp, fp, fn) of a prediction against the gold as multisets: a key predicted k times matches up to k gold
    copies; `extra_fp` adds answers that name nothing comparable (unparsed lines)."""
    tp = sum((Counter(predicted) & Counter(gold)).values())
    return tp, len(predicted) - tp + extra_fp, len(gold) - tp


class MicroPRF(Scorer):
    """Base of the extraction scorers: statistics are per-example (tp, fp, fn); the matrix shows micro F1, and
    micro precision and recall are reported beside it."""

    metric = "f1"

    def also_reported(self) -> tuple[str, ...]:
        return ("precision", "recall")

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        """Micro F1 in percent from the summed (tp, fp, fn) columns: stats (..., n, 3) -> (...)."""
        return f1(stats)

    @classmethod
    def also_aggregate(cls, stats: np.ndarray, k: int) -> float:
        return float((precision, recall)[k](stats))
