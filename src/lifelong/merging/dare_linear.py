"""DARE with a linear combination (Yu et al. 2024, "Language Models are Super Mario: Absorbing Abilities from
Homologous Models as a Free Lunch", arXiv 2311.03099), mergekit 0.1.5's `dare_linear`: each task vector
keeps every entry with probability `density` (Drop), is rescaled so its L1 norm is unchanged (`rescale`,
mergekit's version of the paper's 1/density), and the weighted task vectors are summed onto the base
(task arithmetic; `normalize` divides by the sum of the weights).

Global: `normalize` false, `rescale` true, `lambda` 1.0, `int8_mask` (no effect). Per model: `weight` 1.0,
`density` 1.0 (keep all). Masks: seeded by (seed, tensor name, model index). lifelong's own DARE (drop
probability p, rescale by exactly 1/(1-p), a choice of combination) is `dare`.
"""

from __future__ import annotations

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class DareLinearParams(TaskVectorParams):
    normalize: bool = False
    """Divide the summed task vectors by the sum of the weights."""
    rescale: bool = True
    """Scale each sparsified task vector back to its L1 norm."""


@MERGE_METHODS.register("dare_linear")
class DareLinear(TaskVectorMethod):
    """Random drop (keep probability `density`), L1 rescale, weighted sum."""

    Params = DareLinearParams
    sparsifier = "random"
