"""Scorers: one file each, registered by file name.

A scorer turns eval items into per-example statistics `(n, k)`; `aggregate` maps statistics `(..., n, k)` to
the task score, so a bootstrap over examples resamples rows of the statistics.
"""
from lifelong.registry import Registry, import_siblings
from lifelong.eval.scorers.base import Scorer

SCORERS: Registry[type[Scorer]] = Registry("scorer")

import_siblings(__name__, __path__)

__all__ = ["SCORERS", "Scorer"]
