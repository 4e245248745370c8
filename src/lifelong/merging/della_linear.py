"""DELLA with a linear combination (Deep et al. 2024, arXiv 2406.11617), mergekit 0.1.5's `della_linear`:
MagPrune (keep probability from density - epsilon to density + epsilon by magnitude rank within each row),
L1 rescale (`rescale`), then the weighted sum of the task vectors onto the base (no sign election).

Global: `normalize` false, `rescale` true, `lambda` 1.0, `int8_mask` (no effect). Per model: `weight` 1.0,
`density` 1.0, `epsilon` 0.15. Masks: seeded by (seed, tensor name, model index).
"""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class DellaLinearParams(TaskVectorParams):
    normalize: bool = False
    """Divide the summed task vectors by the sum of the weights."""
    rescale: bool = True
    """Scale each sparsified task vector back to its L1 norm."""


@MERGE_METHODS.register("della_linear")
class DellaLinear(TaskVectorMethod):
    """Magnitude-ranked random drop, L1 rescale, weighted sum."""

    Params = DellaLinearParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "density": 1.0, "epsilon": 0.15}
    sparsifier = "della_magprune"
