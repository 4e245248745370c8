"""Model Breadcrumbs with TIES' sign election (Davari & Belilovsky 2024, arXiv 2312.06795; Yadav et al. 2023,
arXiv 2306.01708), mergekit 0.1.5's `breadcrumbs_ties`: the breadcrumbs mask (drop the `gamma` fraction of
largest magnitudes and the small tail, keeping int(density n) entries), then the sign of every entry is
elected by the summed weighted values and only agreeing entries are summed onto the base (divided by the
sum of their weights with `normalize`).

Global: `normalize` false, `rescale` false, `lambda` 1.0, `int8_mask` (no effect). Per model: `weight` 1.0,
`density` 1.0, `gamma` 0.01.
"""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class BreadcrumbsTiesParams(TaskVectorParams):
    normalize: bool = False
    """Divide by the sum of the agreeing entries' weights."""


@MERGE_METHODS.register("breadcrumbs_ties")
class BreadcrumbsTies(TaskVectorMethod):
    """Breadcrumbs masks, sign election by mass, sum of the agreeing entries."""

    Params = BreadcrumbsTiesParams
    model_params: ClassVar[dict[str, Any]] = {"weight": 1.0, "density": 1.0, "gamma": 0.01}
    sparsifier = "magnitude_outliers"
    consensus = "sum"
