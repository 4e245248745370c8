"""Model Breadcrumbs (Davari & Belilovsky 2024, "Model Breadcrumbs: Scaling Multi-Task Model Merging with
Sparse Masks", arXiv 2312.06795), mergekit 0.1.5's `breadcrumbs`: each task vector loses its `gamma` fraction
of largest-magnitude entries (outliers) and its smallest ones, keeping int(density * n) entries: with n the
tensor's size, the entries of ascending-magnitude rank in [n - int(density n) - int(gamma n),
n - int(gamma n)) (the outlier cut shrinks when density + gamma > 1). The weighted masked task vectors are
summed onto the base (task arithmetic).

Global: `normalize` false, `rescale` false (true: scale to the L1 norm), `lambda` 1.0, `int8_mask` (no
effect). Per model: `weight` 1.0, `density` 1.0 (keep all, nothing removed), `gamma` 0.01.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class BreadcrumbsParams(TaskVectorParams):
    normalize: bool = False
    """Divide the summed task vectors by the sum of the weights."""


@MERGE_METHODS.register("breadcrumbs")
class Breadcrumbs(TaskVectorMethod):
    """Drop the top-gamma outliers and the small tail of every task vector, then a weighted sum."""

    Params = BreadcrumbsParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "density": 1.0, "gamma": 0.01}
    sparsifier = "magnitude_outliers"
