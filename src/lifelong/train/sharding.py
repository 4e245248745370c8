"""What the rest of lifelong needs to know about sharded parameters, on torch's own APIs.

Under FSDP2 (`accelerate launch` with `distributed_type: FSDP`, `fsdp_version: 2`) accelerate calls
`torch.distributed.fsdp.fully_shard` on the model: every parameter becomes a `DTensor` whose local part is
this process's shard (dim 0, `torch.chunk` sizes). Code that reads or writes whole parameters by name (EWC's
anchor, merges, edits, checkpoints) goes through the functions below, which are the identity on plain
tensors, so the same code serves one process, DDP and FSDP2. Nothing here shards a model: accelerate does.

Collectives: `full_tensor`, `full_state_dict`, `load_full_state_dict` and the optimizer functions talk to
the other processes when the model is sharded, so every process must call them, in the same order, with the
same tensors. `local_tensor`, `shard_like` and `assign_full_` are local (no communication).

DeepSpeed ZeRO-3 parameters (an empty local tensor and a `ds_id`) are gathered with
`deepspeed.zero.GatheredParameters` by `full_tensor`, and by `full_state_dict` one parameter at a time; the other
state-dict functions cover FSDP2 and plain models.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = [
    "assign_full_",
    "full_optimizer_state",
    "full_state_dict",
    "full_tensor",
    "is_sharded",
    "load_full_optimizer_state",
    "load_full_state_dict",
    "local_tensor",
    "reshard",
    "shard_like",
    "sharding_mode",
]


def _dtensor_type() -> Optional[type]:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        return None
    return DTensor


def _is_dtensor(t: Any) -> bool:
    dt = _dtensor_type()
    return dt is not None and isinstance(t, dt)


def _is_zero3(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and hasattr(t, "ds_id")


def is_sharded(model_or_param: Any) -> bool:
    """Whether a parameter is a shard (an FSDP2 `DTensor` or a ZeRO-3 partitioned parameter), or a module
    holds any such parameter."""
    if isinstance(model_or_param, torch.Tensor):
        return _is_dtensor(model_or_param) or _is_zero3(model_or_param)
    if isinstance(model_or_param, torch.nn.Module):
        return any(_is_dtensor(p) or _is_zero3(p) for p in model_or_param.parameters())
    return False


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: an all-gather of a `DTensor` (a collective), a gathered copy of a ZeRO-3 parameter,
    a plain tensor as it is (no copy)."""
    if _is_dtensor(t):
        return t.full_tensor()  # type: ignore[attr-defined]
    if _is_zero3(t):
        import deepspeed  # type: ignore[import-not-found]

        with deepspeed.zero.GatheredParameters([t], modifier_rank=None):
            return t.detach().clone()
    return t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This process's shard of a `DTensor` (a view of its storage); a plain tensor as it is."""
    if _is_dtensor(t):
        return t.to_local()  # type: ignore[attr-defined]
    return t


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` (the same on every process) laid out like `like`: a `DTensor` on `like`'s mesh and placements
    whose local part this process cuts from `full` itself (no communication), or `full` on `like`'s device
    and dtype when `like` is plain."""
    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"shard_like: a full tensor of shape {tuple(full.shape)} for one of {tuple(like.shape)}")
    if _is_dtensor(like):
        from torch.distributed.tensor import distribute_tensor

        mesh = like.device_mesh  # type: ignore[attr-defined]
        src = full.detach().to(device=like.to_local().device, dtype=like.dtype)  # type: ignore[attr-defined]
        return distribute_tensor(src, mesh, like.placements, src_data_rank=None)  # type: ignore[attr-defined]
    return full.to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def assign_full_(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write the full tensor `full` (the same on every process) into `param` in place: into this process's
    shard of a `DTensor`, into the whole of a plain tensor. No autograd, no communication."""
    if _is_dtensor(param):
        local_tensor(param).copy_(local_tensor(shard_like(full, param)))
    elif _is_zero3(param):
        import deepspeed  # type: ignore[import-not-found]

        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            param.copy_(full.to(device=param.device, dtype=param.dtype))
    else:
        param.copy_(full.to(device=param.device, dtype=param.dtype))


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state_dict(model: torch.nn.Module, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """The model's whole state dict on the CPU, names as in the unsharded model. Sharded: gathered with
    `torch.distributed.checkpoint.state_dict.get_model_state_dict` (a collective); only process 0 gets the
    tensors (the others an empty dict) unless `all_ranks`. DeepSpeed ZeRO-3: gathered one parameter at a time
    (a collective each, in state-dict order), on every process. Plain: `model.state_dict()` moved to the CPU
    (tensors already there are not copied)."""
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if any(_is_zero3(p) for p in model.parameters()):  # DeepSpeed ZeRO-3: every process gets the tensors
        done: dict[int, torch.Tensor] = {}  # tied names share one gathered tensor
        held = model.state_dict(keep_vars=True)
        for t in held.values():
            if id(t) not in done:
                done[id(t)] = full_tensor(t).detach().cpu()
        return {k: done[id(t)] for k, t in held.items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    sd = get_model_state_dict(model, options=_options(cpu_offload=not all_ranks))
    return {k: v.detach().cpu() for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_full_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a whole (unsharded) state dict, which every process holds, into the model, sharded or not (each
    process keeps its shards: `set_model_state_dict`). `strict=False` loads a part (an adapter) and leaves
    the rest. (torch's `broadcast_from_rank0` is not offered: in torch 2.13 on gloo it fails on a model that
    has run forward, and leaves parameters accelerate did not shard on one that has not.)"""
    if not is_sharded(model):
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, dict(sd), options=_options(strict=strict))  # it replaces the dict's values


def full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, all_ranks: bool = False
) -> dict[str, Any]:
    """The optimizer's state of a sharded model, whole, keyed by parameter name, on the CPU
    (`get_optimizer_state_dict`, a collective): a copy for process 0 only (the others get an empty dict)
    unless `all_ranks`."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=not all_ranks))
    return _to_cpu(sd)


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sd: dict[str, Any]) -> None:
    """Load a state `full_optimizer_state` returned into the optimizer of a sharded model (every process
    holds `sd`; each keeps its shards)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, _copy(sd), options=_options())  # it changes what it is given


def _copy(x: Any) -> Any:
    """Nested dicts and lists copied, tensors shared."""
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def _to_cpu(x: Any) -> Any:
    """Copies on the CPU (torch returns the optimizer's own tensors where no gathering was needed, e.g. the
    step counts: a state sharing them would advance with the optimizer)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", copy=True)
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_cpu(v) for v in x]
    return x


def sharding_mode(accelerator: Any) -> str:
    """How the accelerator spreads training: "none" (one process), "ddp" (every process holds the whole
    model), "fsdp2", "deepspeed"; "fsdp1" for FSDP version 1, which lifelong refuses at run start."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        return "fsdp2" if getattr(plugin, "fsdp_version", 1) == 2 else "fsdp1"
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    if kind == DistributedType.NO or accelerator.num_processes <= 1:
        return "none"
    return "ddp"


def reshard(model: Any) -> None:
    """Back to shards after forward passes without backward: FSDP2 keeps groups that do not reshard after
    forward (the root, accelerate's embeddings-and-head group) gathered after one, with plain copies
    registered as the parameters, so writes into them are lost and a later training step would read them
    stale. A no-op for a plain model."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        for m in torch.nn.Module.modules(model):  # type: ignore[arg-type]
            if isinstance(m, FSDPModule):
                m.reshard()
