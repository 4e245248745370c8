"""Scorers: one file each, registered by file name.

A scorer turns eval items into per-example statistics `(n, k)`; `aggregate` maps statistics `(..., n, k)` to
the task score, so a bootstrap over examples resamples rows of the statistics.
"""

from typing import Any

from lifelong.eval.scorers.base import Scorer
from lifelong.registry import Registry, import_siblings

SCORERS: Registry[type[Scorer]] = Registry("scorer")

import_siblings(__name__, __path__)


def check_config(cfg: Any, at: Any) -> list[str]:
    """Located messages for unknown scorer names and scorer parameters that do not validate, over the stages'
    eval tasks and the probes (`cfg` a RunConfig, `at` a `lifelong.configio.Locator`)."""
    tasks: list[tuple[tuple, Any]] = [(("stages", i, "eval"), s.eval) for i, s in enumerate(cfg.stages) if s.eval]
    tasks += [(("eval", "probes", i), t) for i, t in enumerate(cfg.eval.probes)]
    msgs: list[str] = []
    for loc, task in tasks:
        if task.scorer == "auto":
            continue
        if task.scorer not in SCORERS:
            msgs.append(at(loc + ("scorer",), SCORERS.unknown_message(task.scorer)))
            continue
        msgs += at.params(SCORERS.get(task.scorer).Params, task.params, loc + ("params",))[1]
    return msgs


__all__ = ["SCORERS", "Scorer", "check_config"]
