"""Task arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic", arXiv 2212.04089): add the
weighted sum of task vectors tau_i = theta_i - theta_base to the base,

    theta = theta_base + lambda * sum_i w_i tau_i   [/ sum_i w_i with `normalize`].

mergekit 0.1.5's `task_arithmetic`: global `lambda` (1.0), `normalize` (false; a weight sum with |sum| < 1e-8
counts as 1), `rescale` and `int8_mask` (accepted, no effect here); per-model `weight` (1.0; mergekit requires
it) and `density` (1.0, accepted and unused: task arithmetic sparsifies nothing). Bit for bit equal to
mergekit on float32 inputs.
"""

from __future__ import annotations

from lifelong.merging import MERGE_METHODS
from lifelong.merging.sparsify import TaskVectorMethod, TaskVectorParams


class TaskArithmeticParams(TaskVectorParams):
    normalize: bool = False
    """Divide the summed task vectors by the sum of the weights."""


@MERGE_METHODS.register("task_arithmetic")
class TaskArithmetic(TaskVectorMethod):
    """theta_base + lambda * sum_i w_i (theta_i - theta_base)."""

    Params = TaskArithmeticParams
