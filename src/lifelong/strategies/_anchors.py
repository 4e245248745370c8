"""Shared helpers of weight-space regularizers: snapshots of trainable parameters and their state.

Sharded training (FSDP2): a snapshot of a sharded model holds `DTensor` shards laid out like the parameters
(this process's part only), so elementwise state (anchors, Fisher, EMA, task vectors) costs 1/N of a model
per process and every update on it is shard-local. `laid_out` brings state that arrived whole (a checkpoint,
a snapshot taken before the model was sharded) into the parameters' layout; `gathered` makes whole tensors
of it for a checkpoint (a collective).
"""

from __future__ import annotations

from typing import Any

import torch

from lifelong.train.sharding import full_tensor, is_sharded, shard_like


def trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by name, each tensor once (tied weights appear under their first name)."""
    out: dict[str, torch.nn.Parameter] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            out[name] = p
            seen.add(id(p))
    return out


def snapshot(model: Any) -> dict[str, torch.Tensor]:
    """Copies of the trainable parameters (of a sharded model: copies of this process's shards; its root
    group is put back to shards first, in case a forward pass without backward left it gathered)."""
    from lifelong.strategies._frozen import reshard

    reshard(model)
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def laid_out(state: dict[str, torch.Tensor], params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """`state` with every whole tensor whose parameter is sharded replaced by this process's shard of it
    (its own dtype kept; no communication); tensors already sharded, and those of plain parameters, as they
    are. A no-op (the same dict) when nothing is sharded."""
    if not any(is_sharded(params[n]) and not is_sharded(t) for n, t in state.items() if n in params):
        return state
    out = dict(state)
    for n, t in state.items():
        p = params.get(n)
        if p is not None and is_sharded(p) and not is_sharded(t):
            out[n] = shard_like(t, p.detach() if p.dtype == t.dtype else p.detach().to(t.dtype))
    return out


def gathered(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with sharded tensors made whole on the CPU, for a checkpoint: a collective when any is
    sharded (every process calls it, in the same order); the whole tensors stay on process 0, the others get
    an empty dict (as `lifelong.train.sharding.full_state_dict`). Plain state is returned as it is."""
    if not any(is_sharded(t) for t in state.values()):
        return state
    import torch.distributed as dist

    main = dist.get_rank() == 0
    out: dict[str, torch.Tensor] = {}
    for n, t in state.items():
        whole = full_tensor(t).detach().cpu() if is_sharded(t) else t
        if main:
            out[n] = whole
    return out


def global_sum(x: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """`float(x.sum(dtype=dtype))` over a possibly sharded tensor: a sharded sum is a partial one on each
    process, so it is all-reduced (a collective); `float()` of it alone would give this process's part."""
    s = x.sum(dtype=dtype)
    return float(full_tensor(s)) if is_sharded(s) else float(s)
