"""DARE with TIES' sign election (Yu et al. 2024, arXiv 2311.03099, with Yadav et al. 2023, arXiv 2306.01708),
mergekit 0.1.5's `dare_ties`: each task vector keeps every entry with probability `density`, is rescaled to
its L1 norm (`rescale`), is weighted; the sign of every entry is elected by the summed weighted values and only
agreeing entries are summed (divided by the sum of their weights with `normalize`) onto the base.

Global: `normalize` false, `rescale` true, `lambda` 1.0, `int8_mask` (no effect). Per model: `weight` 1.0,
`density` 1.0. Masks: seeded by (seed, tensor name, model index).
"""

from __future__ import annotations

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class DareTiesParams(TaskVectorParams):
    normalize: bool = False
    """Divide by the sum of the agreeing entries' weights."""
    rescale: bool = True
    """Scale each sparsified task vector back to its L1 norm."""


@MERGE_METHODS.register("dare_ties")
class DareTies(TaskVectorMethod):
    """Random drop, L1 rescale, sign election by mass, sum of the agreeing entries."""

    Params = DareTiesParams
    sparsifier = "random"
    consensus = "sum"
