"""Greedy soup (Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", ICML, Recipe 1).

Candidates are sorted by their own held-out score, best first; the soup starts with the best one, and each
next candidate is kept only if the uniform average of the soup plus it scores at least as well as the soup
without it on the held-out task (scored by lifelong's evaluator). The result is the uniform average of the
kept models. Selection needs evaluation, so the driver runs it before streaming the final average.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from pydantic import Field

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class GreedySoupParams(Strict):
    eval: dict[str, Any] = Field(default_factory=dict)
    """The held-out task, as an eval task of a run config (path or rows, format, template, scorer)."""
    batch_size: int = Field(default=16, ge=1)
    """Evaluation batch size."""


def select_greedy(n: int, score: Callable[[list[int]], float]) -> tuple[list[int], list[dict]]:
    """Indices of the kept models, and a log of every trial. `score(indices)` scores the uniform soup of
    those models (higher is better)."""
    solo = [score([i]) for i in range(n)]
    order = sorted(range(n), key=lambda i: -solo[i])
    soup, best = [order[0]], solo[order[0]]
    log = [{"soup": list(soup), "score": best, "kept": True}]
    for i in order[1:]:
        s = score(soup + [i])
        kept = s >= best
        log.append({"soup": soup + [i], "score": s, "kept": kept})
        if kept:
            soup, best = soup + [i], s
    return soup, log


@MERGE_METHODS.register("greedy_soup")
class GreedySoup(MergeMethod):
    """Uniform average of the candidates a greedy held-out selection keeps."""

    Params = GreedySoupParams

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        return torch.stack(tensors).mean(0)
