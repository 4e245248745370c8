"""Model averaging against the alignment tax (Lin et al. 2024, "Mitigating the Alignment Tax of RLHF"):
interpolate between the weights before and after an alignment stage, theta = (1 - a) theta_0 + a theta_1,
with one ratio or a ratio per block of layers (heterogeneous model averaging: the paper finds different
layers trade reward and tax differently). Layers come from the per-architecture module map.

Which end is which: theta_0 is the model as the preference stage starts, theta_1 the model it trained, and
`a` is the weight of the aligned end: a = 0 keeps the stage-start model (no alignment, no tax), a = 1 the
fully aligned model (no averaging). The authors' released code (avalonstrel/Mitigating-the-Alignment-Tax-of-
RLHF, scripts/postprocess/weight_interpolation.py and its README) writes alpha * theta_0 + (1 - alpha) *
theta_1 with theta_0 the model before RLHF: their alpha weights the pre-alignment end, the reverse of `a`.
To reuse a ratio of theirs, a = 1 - alpha (per block too: a_i = 1 - alpha_i).

Sharded (FSDP2): the ends may be this process's shards of the parameters, or whole tensors (taken before the
model was sharded); whole ones are cut to the parameter's shard, and the interpolation is elementwise on each
process's shards, which equals the unsharded result."""

from __future__ import annotations

import re
from typing import Any

import torch

from lifelong.train.sharding import is_sharded, shard_like


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
    """Set the model's weights to (1 - a) * before + a * after, `a` from `ratios` per block of layers
    (`layer_ratio`): a = 0 gives `before`, a = 1 `after`."""
    from lifelong.train.sharding import reshard

    n_layers = int(getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", 1) or 1)
    reshard(model)  # sharded: write into the shards, not into copies a forward pass left gathered
    for name, p in model.named_parameters():
        if name in before:
            a = layer_ratio(name, ratios, n_layers)
            b, c = _like(before[name], p), _like(after[name], p)
            p.copy_(((1 - a) * b.float() + a * c.float()).to(p.dtype))


def _like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`t` (an end of the interpolation) laid out like parameter `p`: a whole tensor of a sharded `p` cut to
    this process's shard (its dtype kept), anything else as it is."""
    if is_sharded(p) and not is_sharded(t):
        return shard_like(t, p.detach().to(t.dtype))
    return t
