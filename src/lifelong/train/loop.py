"""The training loop of trainable stages, on accelerate.

All processes walk the same global micro-batches in the same order (a permutation per epoch seeded by run
seed, stage and epoch); strategies transform the global micro-batch identically on every process (replay
mixing), and each process then takes its slice. So the data position is just the optimizer step, resume is
exact, and replay is consistent across processes. The loop owns backward, clipping, optimizer and
scheduler steps; strategies only add penalties and act at the hooks.

Sharded (FSDP2 through `accelerate launch`, `lifelong.train.sharding`): accelerate's `prepare` shards the
model in place the first time and the model stays sharded for the rest of the stream (evaluation, the hooks
and the next stages see the sharded model). A strategy that adds parameters to the sharded model at a stage
start (a new adapter) gets an unsharded rebuild of the model first (`unsharded_copy`), which `prepare` then
shards whole. Optimizer state is loaded after `prepare` (into the sharded optimizer) and saved whole, keyed by
parameter name (`torch.distributed.checkpoint.state_dict`); checkpoints hold whole weights written by the
main process. Without sharding nothing here costs anything per step.

DeepSpeed (`accelerate launch` with a ZeRO-2/3 config, docs/scale.md): each stage's batch shape and clipping go
into the DeepSpeed config before `prepare` builds the engine; the engine divides the loss by the accumulation
steps, clips and steps inside `accelerator.backward` at the boundary `accelerator.accumulate` marks, so the loop
neither divides nor clips nor calls `before_step` (`StageContext.engine_steps`). At the stage end the engine is
destroyed and the model is plain again (ZeRO-2: own storage; ZeRO-3: gathered and rebuilt). Optimizer state in
checkpoints and across stages (`keep`) is each process's part of DeepSpeed's (ZeRO-2).
"""

from __future__ import annotations

import math
import resource
import time
from contextlib import nullcontext
from typing import Any, Iterator, Optional

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lifelong.data.collate import collate
from lifelong.train import sharding
from lifelong.train.accel import (
    adamw,
    clip_grad_norm,
    deepspeed_stage,
    load_zero_state,
    optimizer_step,
    own_storage,
    release,
    shard,
    zero_stage,
    zero_state,
)
from lifelong.train.checkpoint import StateHolder, read_part, save_checkpoint, stage_part, tied_names
from lifelong.train.context import RunView, StageContext
from lifelong.train.inner_eval import eval_due
from lifelong.train.schedules import lr_multiplier

__all__ = [
    "collate",
    "micro_batches",
    "optimizer_state_as",
    "rewrapped",
    "stage_steps",
    "train_stage",
    "unsharded_copy",
]


def micro_batches(
    n: int, size: int, seed: int, stage: int, start: int = 0, order: Optional[list[int]] = None
) -> Iterator[list[int]]:
    """Endless global micro-batches of example indices; a fresh permutation each epoch, or the fixed
    `order` (a curriculum) every epoch."""
    pos = start * size
    perm_epoch, perm = -1, np.arange(0)
    while True:
        idx: list[int] = []
        while len(idx) < size:
            epoch, off = divmod(pos, n)
            if epoch != perm_epoch:
                perm = (
                    np.asarray(order)
                    if order is not None
                    else np.random.default_rng([seed, stage, epoch]).permutation(n)
                )
                perm_epoch = epoch
            idx.append(int(perm[off]))
            pos += 1
        yield idx


def stage_steps(n_examples: int, global_batch: int, max_steps: Optional[int], epochs: float) -> int:
    if max_steps:
        return max_steps
    return max(1, math.ceil(epochs * n_examples / global_batch))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rewrapped(run: RunView, index: int, model: Any, training: bool = False) -> Any:
    """`model` given the structure the strategy had given it at stage `index`: `wrap_model` with `resuming`
    (the structure a checkpoint of that stage holds), and with `training` also the stage's own `wrap_model`
    (trainable flags, active adapters)."""
    acc = run.accelerator
    ctx = StageContext(
        stage_index=index,
        stage_name=run.cfg.stages[index].name,
        model=model,
        tokenizer=run.tokenizer,
        accelerator=acc,
        device=acc.device,
        resuming=True,
        run_dir=run.run_dir,
        formatter=run.formatter,
    )
    model = ctx.model = run.strategy.wrap_model(ctx)
    if training:
        ctx.resuming = False
        model = run.strategy.wrap_model(ctx)
    return model


def unsharded_copy(run: RunView, index: int, weights: dict, training: bool = False) -> Any:
    """A plain (unsharded) model with the structure the strategy gives stage `index` and the whole state dict
    `weights`: the starting model reloaded from the config, `wrap_model(resuming=True)` (the structure of a
    checkpoint), with `training` also the stage's own `wrap_model` (trainable flags, active adapters), then the
    weights, every one. The random number generators are left as they were (what the rebuild draws, e.g. an
    adapter's initialisation, is overwritten by `weights`)."""
    from lifelong.models import load_model_and_tokenizer

    with torch.random.fork_rng(devices=[]):
        model, _ = load_model_and_tokenizer(run.cfg.model, seed=run.cfg.seed)
        model = rewrapped(run, index, model.to(run.accelerator.device), training)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = tied_names(model)
    if unexpected or [m for m in missing if m not in tied]:
        raise ValueError(
            f"stages.{index}: the strategy's model structure does not hold the sharded model's weights "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model


def optimizer_state_as(state: dict, names: list[str], by_name: bool) -> dict:
    """An optimizer state dict keyed the other way when needed: by parameter name (what
    `torch.distributed.checkpoint` reads and writes for a sharded model) or by position (torch's
    `Optimizer.state_dict`); `names` are the trainable parameters' names in optimizer order."""
    params = state["param_groups"][0]["params"] if state.get("param_groups") else []
    if not params or isinstance(params[0], str) == by_name:
        return state
    if by_name:
        key: Any = dict(enumerate(names))
    else:
        key = {n: i for i, n in enumerate(names)}
    try:
        return {
            "state": {key[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [key[k] for k in g["params"]]} for g in state["param_groups"]],
        }
    except KeyError as e:
        raise ValueError(f"optimizer state names parameter {e} that this model does not train") from None


def train_stage(
    run: RunView, index: int, examples: list[dict], resume: Optional[dict] = None, objective: Any = None
) -> dict:
    """Train stage `index` on its examples; return its cost figures."""
    tc = run.cfg.stage_train(index)
    acc = run.accelerator
    ctx = StageContext(
        stage_index=index,
        stage_name=run.cfg.stages[index].name,
        model=run.model,
        tokenizer=run.tokenizer,
        examples=examples,
        accelerator=acc,
        device=acc.device,
        run_dir=run.run_dir,
        formatter=run.formatter,
    )
    mode = sharding.sharding_mode(acc)
    sharded = mode == "fsdp2"
    engine = ctx.engine_steps = mode == "deepspeed"  # the engine steps inside backward (StageContext)
    model = run.model = ctx.model = run.strategy.wrap_model(ctx).to(acc.device)  # adapters etc.
    if sharded and sharding.is_sharded(model) and not all(sharding.is_sharded(p) for p in model.parameters()):
        # parameters added to a sharded model: rebuild it unsharded so that prepare shards all of it
        model = unsharded_copy(run, index, sharding.full_state_dict(model, all_ranks=True), training=True)
        run.model = ctx.model = model
    world, rank = acc.num_processes, acc.process_index
    micro = tc.batch_size * world
    steps = stage_steps(len(examples), micro * tc.grad_accum, tc.max_steps, tc.epochs)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        model._lifelong_checkpointing = True
    elif getattr(model, "_lifelong_checkpointing", False):
        model.gradient_checkpointing_disable()
        model._lifelong_checkpointing = False

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    opt = adamw(params, tc, index)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(tc, steps, index))
    names = [n for n, _ in named]
    kept = None  # AdamW moments carried over the boundary (sharded: loaded into the sharded optimizer)
    if tc.optimizer_state == "keep" and run.optimizer_state is not None and resume is None:
        kept = run.optimizer_state
        if not sharded and not engine:
            _keep_moments(opt, model, kept, names, tc.lr * lr_multiplier(tc, steps, index)(0), index, False)
    ctx.num_steps = steps
    start = 0
    state = None
    if resume is not None:  # mid-stage checkpoint: weights/strategy/RNG already restored by the runner
        start = int(resume["step"])
        if engine or "zero" in resume:  # DeepSpeed's own parts: loaded into the engine after prepare
            state = read_part(resume, rank, world, engine)
        else:
            state = optimizer_state_as(resume["optimizer_state"]["optimizer"], names, by_name=sharded)
            if not sharded:
                opt.load_state_dict(state)
        sched.load_state_dict(resume["optimizer_state"]["scheduler"])
    else:
        run.strategy.before_stage(ctx)
    deepspeed_stage(acc, tc.batch_size, tc.grad_accum, tc.max_grad_norm)  # the engine's batch shape, clipping
    wrapped, opt_w = acc.prepare(model, opt)
    if sharded:  # accelerate sharded the model in place and gave the optimizer the sharded parameters
        params = [p for p in wrapped.parameters() if p.requires_grad]
        if kept is not None:
            _keep_moments(opt, wrapped, kept, names, tc.lr * lr_multiplier(tc, steps, index)(0), index, True)
        if state is not None:
            sharding.load_full_optimizer_state(wrapped, opt, state)
    if engine:  # DeepSpeed's optimizer exists now: this process's part of the state goes into it
        if state is not None:
            load_zero_state(opt_w, state, rank, masters=True)
        if kept is not None:
            _keep_zero(opt_w, kept, rank, index)
    wrapped.train()

    pad_id = run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0
    data = run.cfg.stages[index].data
    order = None
    if data is not None and data.order == "curriculum":
        from lifelong.data.curriculum import curriculum_order

        order, info = curriculum_order(
            data,
            examples,
            model=run.model,
            pad_id=pad_id,
            device=acc.device,
            data_key=run.cache_keys.get(index),
            reference_ident=[
                run.cfg.model.model_dump(mode="json"),
                [s.model_dump(mode="json") for s in run.cfg.stages[:index]],
                [s.model_dump(mode="json") for s in run.cfg.strategy],
                run.cfg.train.model_dump(mode="json"),
                run.cfg.seed,
            ],
        )
        run.log(type="curriculum", stage=index, **info)
    if eval_due(start, steps, tc.eval_every):  # continual evaluation starts at the boundary
        run.evaluate_during(index, start, acc.unwrap_model(wrapped))
    index_stream = micro_batches(len(examples), micro, run.cfg.seed, index, start * tc.grad_accum, order)
    stream = run.strategy.batches(ctx, ([examples[i] for i in idx] for idx in index_stream))
    tokens, t0 = 0, time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        disable=not acc.is_main_process or run.quiet,
        console=run.console,
        transient=False,
    )
    with progress:
        bar = progress.add_task(
            f"stage {index} {ctx.stage_name}", total=steps, completed=start, loss=float("nan"), tps=0.0
        )
        for step in range(start, steps):
            ctx.step = step
            raws, masks = [], []  # read once the step's work is queued (one device sync per step, not per micro-batch)
            for m in range(tc.grad_accum):
                gbatch = next(stream)
                part = shard(len(gbatch), world, rank)
                extra: dict = {}
                if objective is None:
                    batch = collate([gbatch[i] for i in part], pad_id, acc.device)
                if engine:  # accelerate tells the engine which micro-batch ends the step
                    sync: Any = acc.accumulate(wrapped)
                else:
                    sync = acc.no_sync(wrapped) if m < tc.grad_accum - 1 and world > 1 else nullcontext()
                with sync, acc.autocast():
                    if objective is not None:  # e.g. DPO: its own loss over pairs
                        loss, out, extra = objective(wrapped, [gbatch[i] for i in part], acc.device)
                        batch = extra.pop("_batch")
                        raw = loss
                    else:
                        out = wrapped(**batch)
                        loss = raw = out.loss
                    if (
                        world > 1 and objective is None
                    ):  # token-weighted like one process: DDP's gradient mean then equals the
                        n_local = (batch["labels"][:, 1:] != -100).sum()  # mean over all processes' tokens
                        n_all = acc.reduce(n_local.detach().clone(), "sum")
                        loss = loss * n_local * world / n_all.clamp(min=1)
                    pen = run.strategy.penalty(ctx, batch, out)
                    total = loss + pen if pen is not None else loss
                    acc.backward(total if engine else total / tc.grad_accum)  # the engine divides by it itself
                raws.append(raw.detach())
                masks.append(batch["attention_mask"])
            if not engine:  # DeepSpeed clipped and stepped inside the last backward (deepspeed_stage)
                run.strategy.before_step(ctx)
                if tc.max_grad_norm:
                    clip_grad_norm(acc, params, tc.max_grad_norm)
            lr = opt.param_groups[0]["lr"]
            optimizer_step(acc, opt_w)
            sched.step()
            loss_sum, step_tokens = 0.0, 0
            for raw, mask in zip(raws, masks):
                loss_sum += float(raw) / tc.grad_accum
                step_tokens += int(mask.sum())
            tokens += step_tokens * world
            tps = tokens / max(time.perf_counter() - t0, 1e-9)
            progress.update(bar, advance=1, loss=loss_sum, tps=tps)
            run.log(
                type="step",
                stage=index,
                step=step,
                loss=loss_sum,
                lr=lr,
                tokens=step_tokens * world,
                tokens_per_s=tps,
                **extra,
            )
            if run.cfg.trackers:
                acc.log(
                    {"train/loss": loss_sum, "train/lr": lr, "train/tokens_per_s": tps},
                    step=run.step_offsets[index] + step + 1,
                )
            if eval_due(step + 1, steps, tc.eval_every):  # before the checkpoint: a resume has this point
                t0 += run.evaluate_during(index, step + 1, acc.unwrap_model(wrapped))  # not timed as training
            if tc.checkpoint_every and (step + 1) % tc.checkpoint_every == 0 and step + 1 < steps:
                run.flush_log()  # the steps up to a checkpoint are on disk before it (a resume starts after it)
                whole = held = kept = parts = None
                tag = f"stage{index}-step{step + 1}"
                meta: dict[str, Any] = {"stage": index, "step": step + 1, "done": False}
                if sharded:  # gathered by every process, held by the main one
                    whole = sharding.full_state_dict(wrapped)
                    held = sharding.full_optimizer_state(wrapped, opt)
                    kept = run.strategy.state_dict()  # strategies gather per-parameter state: a collective
                if engine:  # every process stages its part of DeepSpeed's optimizer state; the scheduler alone
                    parts = stage_part(run.run_dir, tag, zero_state(opt_w), rank)  # goes into optimizer.pt
                    held, meta["zero"] = {}, {"processes": world}
                    whole = sharding.full_state_dict(acc.unwrap_model(wrapped))  # views of the engine's buffer
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(
                        run.run_dir,
                        tag,
                        acc.unwrap_model(wrapped),
                        run.strategy,
                        meta,
                        opt if held is None else StateHolder(held),
                        sched,
                        keep=tc.keep_checkpoints,
                        weights=whole,
                        strategy_state=kept,
                        parts=parts,
                    )
                    run.log(type="checkpoint", stage=index, step=step + 1)
                acc.wait_for_everyone()
    run.flush_log()
    model = acc.unwrap_model(wrapped)
    run.model = model
    run.optimizer_state = None
    if tc.optimizer_state == "keep":  # sharded: whole, by parameter name, on every process; DeepSpeed: its part
        if engine:
            run.optimizer_state = {"zero": zero_state(opt_w)}
        else:
            run.optimizer_state = (
                sharding.full_optimizer_state(wrapped, opt, all_ranks=True) if sharded else opt.state_dict()
            )
    ctx.model = model
    model.eval()
    if engine:  # destroying the engine takes its gradient hooks off the model (EWC's Fisher runs backward)
        whole = sharding.full_state_dict(model, all_ranks=True) if zero_stage(acc) == 3 else None  # ZeRO-3
        release(acc)
        if whole is not None:  # a plain model with the trained weights in place of the partitioned one
            model = unsharded_copy(run, index, whole).eval()
            run.model = ctx.model = model
        own_storage(model)  # ZeRO-2: out of the engine's flat buffer, a plain model again
    run.strategy.after_stage(ctx)
    release(acc)
    return {
        "wall_s": time.perf_counter() - t0,
        "steps": steps - start,
        "tokens": tokens,
        "trainable_params": sum(p.numel() for p in params),
        "peak_memory_mb": peak_memory_mb(acc.device),
        **run.strategy.cost(),
    }


def _keep_moments(opt: Any, model: Any, kept: dict, names: list[str], lr: float, index: int, sharded: bool) -> None:
    """Load the previous stage's AdamW state into this stage's optimizer, keeping this stage's hyper-parameters
    and starting learning rate `lr` (`train.optimizer_state: keep`)."""
    try:
        ordered = optimizer_state_as(kept, names, by_name=sharded)
        group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        state = {"state": ordered["state"], "param_groups": [{**group, "params": ordered["param_groups"][0]["params"]}]}
        if sharded:
            sharding.load_full_optimizer_state(model, opt, state)
        else:
            opt.load_state_dict(state)
        for g in opt.param_groups:
            g["lr"] = lr
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise _keep_mismatch(index, e) from None


def _keep_zero(opt_w: Any, kept: dict, rank: int, index: int) -> None:
    """`train.optimizer_state: keep` under DeepSpeed: the previous stage's part of the ZeRO optimizer state
    (this process's) into this stage's engine, with this stage's settings and the current weights as masters."""
    if "zero" not in kept:
        raise ValueError(
            f"stages.{index}: train.optimizer_state=keep under DeepSpeed needs the previous stage's optimizer "
            "state from DeepSpeed (this run resumed from a checkpoint written without it); use reset, or resume "
            "without DeepSpeed"
        )
    try:
        load_zero_state(opt_w, kept["zero"], rank, masters=False)
    except ValueError as e:
        raise _keep_mismatch(index, e) from None


def _keep_mismatch(index: int, e: Exception) -> ValueError:
    """The error of `train.optimizer_state: keep` when the kept state does not fit this stage's parameters."""
    return ValueError(
        f"stages.{index}: train.optimizer_state=keep needs the same trainable parameters "
        f"as the previous stage ({e}); use reset"
    )
