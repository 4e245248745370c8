"""NearSwap: take the other model's value where it is near the base's, and move the base toward it by at most
t elsewhere (mergekit 0.1.5's `nearswap`, which cites the model card of alchemonaut/QuartetAnemoi-70B-t0.0001;
no paper). Per entry, with a the base and b the other model:

    w   = clamp(t / max(|a - b|, 1e-6), 0, 1)
    out = w b + (1 - w) a  =  a + sign(b - a) min(|b - a|, t)      (t >= 0)

so entries that differ by at most t are swapped to the model's value, and every other entry moves from the
base toward the model by exactly t. `base_model` and one other model are required; `t` is required (no
default, as in mergekit). Arithmetic in float32 in mergekit's order (t / d computed as t * (1 / d), as
torch evaluates `scalar / tensor`); memory: two tensor-sized buffers."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class NearSwapParams(Strict):
    t: float
    """Distance threshold: entries of the model within t of the base's are taken, others move by t."""


def nearswap(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Base a moved toward b by at most t per entry."""
    w = (a - b).abs_().clamp_(min=1e-6)
    w.reciprocal_().mul_(t).clamp_(min=0, max=1)
    out = w * b
    w.neg_().add_(1).mul_(a)
    return out.add_(w)


@MERGE_METHODS.register("nearswap")
class NearSwap(MergeMethod):
    """Entries of the model within t of the base's replace them; others move toward the model by t."""

    Params = NearSwapParams
    uses_base = True
    model_params: ClassVar[dict[str, Any]] = {}
    """No per-model parameters (mergekit's nearswap takes none)."""

    @classmethod
    def check_inputs(cls, n_models: int, has_base: bool) -> Optional[str]:
        """Why these inputs cannot be merged (n_models excludes the base), or None."""
        if not has_base:
            return "nearswap needs base_model (the model whose entries are swapped)"
        if n_models != 1:
            return f"nearswap takes the base_model and exactly 1 other model, got {n_models} others"
        return None

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        self.require_inputs(tensors, base, ctx)
        assert base is not None
        return nearswap(base, tensors[0], self.params.t)  # type: ignore[attr-defined]
