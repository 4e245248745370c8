"""DELLA-Merging (Deep et al. 2024, "DELLA-Merging: Reducing Interference in Model Merging through
Magnitude-Based Sampling", arXiv 2406.11617), mergekit 0.1.5's `della`: MagPrune drops entries of each task
vector at random with a keep probability that rises with the entry's magnitude rank in its row, linearly
from density - epsilon (smallest) to density + epsilon (largest), so a row keeps `density` of its entries
on average; the survivors are rescaled so the tensor keeps its L1 norm (`rescale`; the paper divides each
by its keep probability); then TIES' sign election and the disjoint sum, divided by the sum of the agreeing
weights (`normalize`), scaled by `lambda`, added to the base.

Global: `normalize` true, `rescale` true, `lambda` 1.0, `int8_mask` (no effect). Per model: `weight` 1.0,
`density` 1.0 (keep all), `epsilon` 0.15; with density < 1, density - epsilon and density + epsilon must lie
in (0, 1). Masks: seeded by (seed, tensor name, model index).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class DellaParams(TaskVectorParams):
    normalize: bool = True
    """Divide by the sum of the agreeing entries' weights."""
    rescale: bool = True
    """Scale each sparsified task vector back to its L1 norm."""


@MERGE_METHODS.register("della")
class Della(TaskVectorMethod):
    """Magnitude-ranked random drop, L1 rescale, sign election by mass, weighted disjoint mean."""

    Params = DellaParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "density": 1.0, "epsilon": 0.15}
    sparsifier = "della_magprune"
    consensus = "sum"
