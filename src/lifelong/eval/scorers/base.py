"""The scorer interface."""

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

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        """Per-example statistics, shape (n, k)."""
        raise NotImplementedError

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
