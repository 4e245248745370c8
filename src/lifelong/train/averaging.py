"""Model averaging against the alignment tax (Lin et al. 2024, "Mitigating the Alignment Tax of RLHF"):
interpolate between the weights before and after an alignment stage, theta = (1 - a) theta_0 + a theta_1,
with one ratio or a ratio per block of layers (heterogeneous model averaging: the paper finds different
layers trade reward and tax differently). Layers come from the per-architecture module map."""

from __future__ import annotations

import re
from typing import Any

import torch


def layer_ratio(name: str, ratios: list[float], n_layers: int) -> float:
    if len(ratios) == 1:
        return ratios[0]
    m = re.search(r"\.(?:layers|h)\.(\d+)\.", name)
    if m is None:  # embeddings with the first block, final norm and head with the last
        return ratios[0] if "embed" in name or "wte" in name or "wpe" in name else ratios[-1]
    block = min(int(m.group(1)) * len(ratios) // max(n_layers, 1), len(ratios) - 1)
    return ratios[block]


@torch.no_grad()
def average_into(
    model: Any, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], ratios: list[float]
) -> None:
    n_layers = int(getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", 1) or 1)
    for name, p in model.named_parameters():
        if name in before:
            a = layer_ratio(name, ratios, n_layers)
            p.copy_(((1 - a) * before[name].float() + a * after[name].float()).to(p.dtype))
