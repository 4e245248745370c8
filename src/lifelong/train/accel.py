"""The loop's per-step calls into accelerate, without the costs that buy nothing in the common case.

Profiled on CPU (docs/performance.md), four accelerate calls cost more than the work they wrap:
`AcceleratedOptimizer.step` looks for the `lomo_optim` package on disk twice per call (two `find_spec` walks
of `sys.path`), its `zero_grad` inspects the optimizer's signature per call, `clip_grad_norm_` compares torch
versions and walks the parameters looking for DTensors per call, and `Accelerator.free_memory` runs a full
`gc.collect()` (0.1-0.2 s per stage in a process with transformers loaded). Where accelerate would do no more
than the plain torch call (no gradient scaler, no XLA, FSDP or DeepSpeed, every step a synchronising one),
these helpers make that call; everywhere else they hand over to accelerate. The same calls on the same
optimizer: results are bit-identical (tests/test_loop_speed_invariants.py).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType

__all__ = [
    "accelerator",
    "adamw",
    "clip_grad_norm",
    "deepspeed_stage",
    "fsdp_on_cpu",
    "load_zero_state",
    "optimizer_step",
    "own_storage",
    "release",
    "shard",
    "zero_stage",
    "zero_state",
]


def adamw(params: list, tc: Any, index: int) -> torch.optim.AdamW:
    """The stage's AdamW (`tc`: its `TrainConfig`); torch's fused kernel with `train.fused_adamw`."""
    try:
        return torch.optim.AdamW(
            params,
            lr=tc.lr,
            betas=tc.betas,
            weight_decay=tc.weight_decay,
            **({"fused": True} if tc.fused_adamw else {}),
        )
    except RuntimeError as e:  # a device or dtype torch has no fused kernel for
        raise ValueError(
            f"stages.{index}: train.fused_adamw: torch cannot fuse AdamW for these parameters ({e}); "
            "set train.fused_adamw: false"
        ) from None


def accelerator(**kwargs: Any) -> Any:
    """The run's `Accelerator` (`kwargs` as accelerate takes them), on the CPU when there is no CUDA GPU.
    Launched with DeepSpeed (`ACCELERATE_USE_DEEPSPEED`) on a machine without CUDA, accelerate 1.15 needs two
    things to run DeepSpeed at all (docs/scale.md, "DeepSpeed on this machine"): the process group's backend
    named before the `Accelerator` (`PartialState(backend="gloo")`; it finds none on its own, lets DeepSpeed
    start a world of N but counts one process), and no `cpu=True` (with it accelerate drops the DeepSpeed
    plugin and runs plain data parallel). DeepSpeed then picks its CPU accelerator."""
    import os

    from accelerate import Accelerator, PartialState

    cuda = torch.cuda.is_available()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return Accelerator(cpu=not cuda, **kwargs)
    if not cuda:
        PartialState(backend="gloo")
    acc = Accelerator(**kwargs)
    if zero_stage(acc) == 3:
        # accelerate registers the ZeRO-3 config with transformers, which then builds every model created from
        # now on partitioned (`deepspeed.zero.Init`), even with zero3_init_flag false. lifelong loads, rebuilds
        # and copies whole models between stages (evaluation, checkpoints, edits, merges); the engine partitions
        # the model when `prepare` builds it for a stage.
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
    return acc


def zero_stage(acc: Any) -> int:
    """The DeepSpeed ZeRO stage the accelerator runs (0 when it does not run DeepSpeed)."""
    if acc.distributed_type != DistributedType.DEEPSPEED:
        return 0
    return int(acc.state.deepspeed_plugin.zero_stage)


def deepspeed_stage(acc: Any, micro_batch: int, grad_accum: int, max_grad_norm: Optional[float]) -> None:
    """Put a stage's batch shape and clipping into the DeepSpeed config before `prepare` builds the engine for
    it: `train_micro_batch_size_per_gpu` (accelerate derives it from a prepared DataLoader, and lifelong
    prepares none), `gradient_accumulation_steps` (the engine divides the loss by it and steps at its
    boundary; accelerate takes it over as its own), `train_batch_size`, and `gradient_clipping` (the engine
    clips inside its step; 0 turns it off). Each stage's `train:` section decides, whatever the accelerate
    config file said; a no-op without DeepSpeed."""
    if acc.distributed_type != DistributedType.DEEPSPEED:
        return
    config = acc.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = grad_accum
    config["train_batch_size"] = micro_batch * grad_accum * acc.num_processes
    config["gradient_clipping"] = float(max_grad_norm or 0.0)
    acc.gradient_accumulation_steps = grad_accum  # what accelerate would take over from the config at prepare


def fsdp_on_cpu(acc: Any) -> bool:
    """Turn on the FSDP plugin `accelerate launch` asked for when accelerate left it off because the processes
    run on the CPU. accelerate 1.15 sets `distributed_type: FSDP` only for accelerator devices (GPU, XPU, NPU,
    ...); on the CPU it falls back to `MULTI_CPU` (data parallel, gloo) without a word, although torch's
    `fully_shard` runs on the CPU with gloo. Here the plugin is accelerate's own, built from the same
    environment variables the launcher set (`ACCELERATE_USE_FSDP`, `FSDP_*`), and put on the accelerator's
    state, so `prepare` takes accelerate's FSDP2 path as on a GPU. FSDP version 1 on the CPU is refused.
    Returns whether it was turned on."""
    import os

    if acc.distributed_type != DistributedType.MULTI_CPU or os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return False
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(
            "accelerate config: distributed_type FSDP on CPU processes needs fsdp_config.fsdp_version: 2 "
            f"(FSDP version {plugin.fsdp_version} has no CPU path in torch); set fsdp_version: 2"
        )
    if acc.mixed_precision != "no":
        plugin.set_mixed_precision(acc.mixed_precision)
    from accelerate import PartialState

    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = DistributedType.FSDP
    # as accelerate's own AcceleratorState does once it chose FSDP: every later AcceleratorState() copies the
    # process state's type over its own
    PartialState().distributed_type = DistributedType.FSDP
    return True


def shard(n: int, world: int, rank: int) -> range:
    """The positions of a global micro-batch of `n` examples that process `rank` of `world` takes: contiguous
    parts, the first `n % world` one longer (the split of `numpy.array_split`)."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def _plain(acc: Any, opt_w: Any) -> Any:
    """The wrapped torch optimizer when accelerate's wrapper would only forward to it, else None."""
    if (
        type(opt_w) is AcceleratedOptimizer
        and opt_w.scaler is None
        and acc.distributed_type != DistributedType.XLA
        and acc.gradient_state.sync_gradients
    ):
        return opt_w.optimizer
    return None


def clip_grad_norm(acc: Any, params: list, max_norm: float) -> None:
    """`acc.clip_grad_norm_(params, max_norm)`. Without a gradient scaler, in one process or under DDP (plain
    tensors, no DTensor shards), accelerate ends in this same torch call after per-call version checks and a
    walk over the parameters."""
    plain = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if acc.scaler is None and acc.distributed_type in plain:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    else:
        acc.clip_grad_norm_(params, max_norm)


def optimizer_step(acc: Any, opt_w: Any) -> None:
    """`opt_w.step()` then `opt_w.zero_grad(set_to_none=True)`, as accelerate would do them."""
    plain = _plain(acc, opt_w)
    if plain is None:
        opt_w.step()
        opt_w.zero_grad(set_to_none=True)
        return
    plain.step()
    plain.zero_grad(set_to_none=True)


def release(acc: Any) -> None:
    """Drop accelerate's references to the stage's prepared model and optimizer. On a CPU the optimizer's
    state goes by reference counting as soon as they are dropped (a test checks), so the full garbage
    collection of `free_memory` frees nothing; on an accelerator it also empties the device cache, so there
    `free_memory` runs as it is."""
    if acc.device.type != "cpu" or acc.distributed_type == DistributedType.DEEPSPEED:
        acc.free_memory()
        return
    for held in (acc._models, acc._optimizers, acc._schedulers, acc._dataloaders):
        held.clear()  # what free_memory resets, without its gc.collect()
    acc.step = 0


@torch.no_grad()
def own_storage(model: Any) -> None:
    """Give every parameter that is a view into a larger buffer a storage of its own. DeepSpeed's ZeRO-2
    optimizer flattens a stage's trained parameters into one buffer and leaves them as views into it after its
    engine is gone; safetensors refuses to write such views (a tied embedding then covers only part of a
    storage), and every later path (checkpoints, kept weights, exports, edits, merges) expects the plain
    model one process has. One parameter at a time (tied ones once): transiently one more copy of the
    trained weights."""
    for p in model.parameters():
        if p.untyped_storage().nbytes() != p.numel() * p.element_size():
            p.data = p.data.clone()


_UNSAVED = ("loss_scaler", "param_slice_mappings")
"""Entries of a ZeRO optimizer's state dict that are Python objects (not tensors, numbers or strings) and that
loading does not need (a loss scaler only matters for fp16, which lifelong does not use)."""


def zero_state(opt_w: Any) -> dict:
    """This process's part of a DeepSpeed ZeRO-1/2 optimizer's state: DeepSpeed's own `state_dict()` of its
    `DeepSpeedZeroOptimizer` (the AdamW moments and fp32 master weights of this process's partition, the
    partition layout), copied to the CPU and kept to what `torch.load(weights_only=True)` reads back."""
    from lifelong.train.sharding import _to_cpu

    sd = opt_w.optimizer.state_dict()
    out = {k: v for k, v in sd.items() if k not in _UNSAVED}
    out["zero_stage"] = int(out["zero_stage"])
    return _to_cpu(out)


def load_zero_state(opt_w: Any, state: dict, rank: int, masters: bool) -> None:
    """Load `state` (what `zero_state` returned on process `rank`, same number of processes) into the ZeRO
    optimizer of a freshly prepared engine with DeepSpeed's own `load_state_dict`. `masters`: also its fp32
    master weights (a resume inside a stage: the weights carry on exactly); otherwise the masters are taken
    from the model's weights as they are now (`optimizer_state: keep` at a stage boundary, after which an
    edit or merge may have changed them), and the engine keeps this stage's settings (learning rate, betas,
    weight decay, clipping) over the saved ones. Raises ValueError when the partitions do not match (other
    trainable parameters, or another number of processes)."""
    zero = opt_w.optimizer
    saved = [tuple(t.shape) for t in state.get("single_partition_of_fp32_groups", [])]
    have = [tuple(t.shape) for t in zero.single_partition_of_fp32_groups]
    if saved != have or state.get("partition_count") != zero.partition_count:
        raise ValueError(
            f"the saved ZeRO optimizer partitions ({saved}, {state.get('partition_count')} processes) are not "
            f"this engine's ({have}, {zero.partition_count} processes)"
        )
    groups = [{k: v for k, v in g.items() if k != "params"} for g in zero.optimizer.param_groups]
    clip = zero.clip_grad
    parts: list = [None] * rank + [state]
    zero.load_state_dict(parts, load_optimizer_states=True, load_from_fp32_weights=masters)
    if not masters:  # torch's load_state_dict took the saved groups' settings, DeepSpeed the saved clipping
        for g, mine in zip(zero.optimizer.param_groups, groups):
            g.update(mine)
        zero.clip_grad = clip
