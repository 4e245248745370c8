"""Frozen copies of the model for forward passes only: teachers (LwF) and references (RHO-1).

Unsharded, a copy is `copy.deepcopy`. A model sharded by FSDP2 cannot be deep-copied (torch refuses), and
a whole copy on every process would undo the sharding, so the copy of a sharded model is a twin sharded
exactly like it: the model's class built on the meta device from its config, `fully_shard` (torch's own)
applied to the same submodules on the same device mesh, then filled with this process's shards of the
weights. Every parameter is cut into the same dim-0 chunks as the model's, so the fill is a local copy (no
communication), and a twin's forward pass is a collective like the model's: every process runs it on the
same step. `reshard` (re-exported): a sharded model back to its shards after forward passes without backward.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, cast

import torch

from lifelong.train.sharding import is_sharded, local_tensor, reshard, shard_like

__all__ = ["frozen", "frozen_copy", "reshard"]


def frozen(model: Any) -> Any:
    """`model` in eval mode with every parameter's gradient off."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def frozen_copy(model: Any, weights: Optional[dict[str, torch.Tensor]] = None) -> Any:
    """A frozen copy of `model` (its structure) holding `model`'s weights, or `weights` (a whole state dict,
    e.g. read back from a checkpoint) when given. Sharded `model`: the twin described in the module doc."""
    if not is_sharded(model):
        twin = copy.deepcopy(model)
        if weights is not None:
            twin.load_state_dict(weights)
        return frozen(twin)
    twin = _sharded_twin(model)
    source = model.state_dict() if weights is None else weights
    with torch.no_grad():
        for name, t in twin.state_dict().items():
            if name not in source:
                raise ValueError(f"frozen copy: no weight for {name!r}")
            src = source[name]
            if is_sharded(t) and not is_sharded(src):
                src = shard_like(src, t)
            local_tensor(t).copy_(local_tensor(src))
        held = dict(model.named_buffers())
        for name, b in twin.named_buffers():  # non-persistent buffers (rotary tables) are in no state dict
            if name in held:
                b.copy_(held[name])
    return frozen(twin)


def _sharded_twin(model: Any) -> Any:
    from torch.distributed.fsdp import FSDPModule, fully_shard

    cls: Any = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    config = getattr(model, "config", None)
    if config is None or not hasattr(cls, "config_class"):
        raise ValueError(
            f"a frozen copy of a sharded {cls.__name__} cannot be built (only transformers models rebuild from "
            "their config); this strategy cannot run sharded with this model"
        )
    mesh = next(p for p in model.parameters() if is_sharded(p)).device_mesh
    dtype = next(model.parameters()).dtype
    with torch.device("meta"):
        twin: Any = cls(config)
    twin.to(dtype)
    shared = _tied(model)
    units = [
        name
        for name, m in model.named_modules()
        if name
        and isinstance(m, FSDPModule)
        and not any(id(p) in shared for p in cast(torch.nn.Module, m).parameters())
    ]
    for name in reversed(units):  # innermost first, as sharding goes bottom-up
        fully_shard(twin.get_submodule(name), mesh=mesh)
    fully_shard(twin, mesh=mesh)  # the rest (tied embeddings among them) in the root's group
    twin.to_empty(device=local_tensor(next(model.parameters())).device)
    return twin


def _tied(model: Any) -> set[int]:
    """ids of parameters reachable under more than one name (tied embeddings)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}
