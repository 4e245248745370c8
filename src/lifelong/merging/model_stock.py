"""Model Stock (Jang, Yun and Han 2024, "Model Stock: All we need is just a few fine-tuned models",
arXiv:2403.19522): interpolate between the pre-trained base w_0 and the average of k >= 2 fine-tuned models,
with the ratio set by the angle between their fine-tuning deltas:

    cos theta = mean over pairs i < j of <w_i - w_0, w_j - w_0> / (|w_i - w_0| |w_j - w_0|)
    t         = k cos theta / (1 + (k - 1) cos theta)
    w         = t (1/k) sum_i w_i + (1 - t) w_0

(the paper's eq. for t: fine-tuned weights at equal distance from the centre with a shared angle; orthogonal
deltas, cos theta = 0, give the base; identical deltas, cos theta = 1, give their average).

mergekit 0.1.5's `model_stock` semantics: `base_model` required plus at least two models; one angle per tensor,
or with `filter_wise: true` one angle per vector along the last dimension (per row / output unit of a
[out, in] matrix; a 1-D tensor is one vector); norm products are clamped below at 1e-6 and cosines to
[-1, 1]; where |1 + (k - 1) cos theta| < 1e-6 the base is kept (t = 0). No per-model weights. Arithmetic in
float32 in mergekit's order."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch

from lifelong.config import Strict
from lifelong.merging import MERGE_METHODS
from lifelong.merging.base import MergeMethod, TensorContext


class ModelStockParams(Strict):
    filter_wise: bool = False
    """One angle per row (vector along the last dimension) instead of one per tensor."""


def stock_ratio(cos: torch.Tensor, k: int) -> torch.Tensor:
    """t = k cos / (1 + (k - 1) cos), and 0 (keep the base) where the denominator is below 1e-6 in magnitude."""
    den = 1 + (k - 1) * cos
    singular = den.abs() < 1e-6
    return torch.where(singular, torch.zeros_like(cos), (k * cos) / torch.where(singular, torch.ones_like(den), den))


def model_stock(base: torch.Tensor, tensors: list[torch.Tensor], filter_wise: bool = False) -> torch.Tensor:
    shape = base.shape
    if filter_wise:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [x.unsqueeze(0) if base.dim() == 1 else x for x in tensors]
    else:
        w0 = base.reshape(-1)
        ws = [x.reshape(-1) for x in tensors]
    deltas = [w - w0 for w in ws]
    norms = [torch.norm(d, dim=-1) for d in deltas]
    cosines = []
    for i in range(len(deltas)):
        for j in range(i + 1, len(deltas)):
            dot = (deltas[i] * deltas[j]).sum(dim=-1)
            cosines.append((dot / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
    del deltas
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    t = stock_ratio(cos, k)
    avg: Any = sum(ws)
    avg = avg / k
    out = t * avg
    out.add_((1 - t) * w0)
    return out.reshape(shape)


@MERGE_METHODS.register("model_stock")
class ModelStock(MergeMethod):
    """Base + the fine-tuned average, mixed by the Model Stock ratio from the angle between the deltas."""

    Params = ModelStockParams
    uses_base = True
    model_params: ClassVar[dict[str, Any]] = {}
    """No per-model parameters (mergekit's model_stock takes none)."""

    @classmethod
    def check_inputs(cls, n_models: int, has_base: bool) -> Optional[str]:
        """Why these inputs cannot be merged (n_models excludes the base), or None."""
        if not has_base:
            return "model_stock needs base_model (the pre-trained model the others were fine-tuned from)"
        if n_models < 2:
            return f"model_stock needs at least 2 fine-tuned models besides the base_model, got {n_models}"
        return None

    def merge(
        self, tensors: list[torch.Tensor], weights: list[float], base: Optional[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        self.require_inputs(tensors, base, ctx)
        assert base is not None
        p: ModelStockParams = self.params  # type: ignore[assignment]
        return model_stock(base, tensors, p.filter_wise)
