"""The scorer interface: `score(lm, items)` gives per-example statistics; `score_details(lm, items)` gives them
with one audit record per statistics row (what the model predicted and why), which a run stores as
`examples/<task>/<row>.jsonl` (docs/eval.md). A scorer that implements only `score` still works: its items
are stored with their statistics alone."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import numpy as np
from pydantic import BaseModel

from lifelong.config import Strict


class NoParams(Strict):
    """A method without parameters."""


class Scorer:
    Params: ClassVar[type[BaseModel]] = NoParams
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ()
    """Eval row formats this scorer accepts."""
    unit: ClassVar[str] = "%"
    """Unit of the task score shown in the results matrix."""
    metrics_unit: ClassVar[Optional[str]] = None
    """Unit of the continual-learning metrics (AA, AIA, FM, BWT, FWT) of this scorer's tasks when they are not
    computed on the score itself (see `metrics_aggregate`); None: the score's `unit`."""

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def also_reported(self) -> tuple[str, ...]:
        """Names of further scores computed from the same statistics and reported beside the matrix (results.json
        `also`, `lifelong show`): e.g. `acc_norm` for `choice`, precision and recall beside an F1. The k-th is
        `also_aggregate(stats, k)`. Default: none."""
        return ()

    @classmethod
    def also_aggregate(cls, stats: np.ndarray, k: int) -> float:
        """The k-th score of `also_reported` from statistics (n, columns). Default: the mean of column k + 1 in
        percent (a per-example 0/1 score kept beside column 0)."""
        return float(100.0 * stats[..., k + 1].mean(axis=-1))

    def signature(self) -> Optional[str]:
        """What makes this scorer's number comparable across papers (e.g. sacrebleu's signature: tokenizer,
        smoothing, version), recorded with the task in results.json; None when there is nothing to record."""
        return None

    def signature_field(self) -> dict[str, str]:
        """`{"signature": ...}` for a task's record in results.json, or `{}` without one (computed once)."""
        sig = self.signature()
        return {"signature": sig} if sig else {}

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        """Per-example statistics, shape (n, k). Built-in scorers implement `score_details` instead."""
        if type(self).score_details is Scorer.score_details:
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_details")
        return self.score_details(lm, items)[0]

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        """Statistics (n, k) and one record per statistics row, in the same order: `index` (the item's
        position in `items`), `score` (the item's own score), `prediction` and `gold` (shown by
        `lifelong show --examples`), and what the scorer computed on the way (option log-likelihoods, the
        generated text, ...). JSON-serialisable values only. Default: `score` with no records."""
        return self.score(lm, items), None

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        """Default: mean of column 0 in percent. stats (..., n, k) -> (...)."""
        return 100.0 * stats[..., 0].mean(axis=-1)

    @classmethod
    def metrics_aggregate(cls, stats: np.ndarray) -> np.ndarray:
        """The value of a cell that the continual-learning metrics and their bootstrap use, stats (..., n, k) ->
        (...), in `metrics_unit`. Default: the score. A scorer whose score is on a multiplicative scale
        (perplexity) gives its log here, so one exploding task cannot dominate differences."""
        return cls.aggregate(stats)
