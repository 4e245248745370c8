"""The scorer interface."""

from __future__ import annotations

from typing import Any, ClassVar

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

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        """Per-example statistics, shape (n, k)."""
        raise NotImplementedError

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        """Default: mean of column 0 in percent. stats (..., n, k) -> (...)."""
        return 100.0 * stats[..., 0].mean(axis=-1)
