"""The training loop of trainable stages, on accelerate.

All processes walk the same global micro-batches in the same order (a permutation per epoch seeded by run
seed, stage and epoch); strategies transform the global micro-batch identically on every process (replay
mixing), and each process then takes its slice. So the data position is just the optimizer step, resume is
exact, and replay is consistent across processes. The loop owns backward, clipping, optimizer and
scheduler steps; strategies only add penalties and act at the hooks.
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
from lifelong.train.accel import adamw, clip_grad_norm, optimizer_step, release, shard
from lifelong.train.checkpoint import save_checkpoint
from lifelong.train.context import RunView, StageContext
from lifelong.train.inner_eval import eval_due
from lifelong.train.schedules import lr_multiplier

__all__ = ["collate", "micro_batches", "stage_steps", "train_stage"]


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
    model = run.model = ctx.model = run.strategy.wrap_model(ctx).to(acc.device)  # adapters etc.
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

    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, tc, index)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(tc, steps, index))
    if tc.optimizer_state == "keep" and run.optimizer_state is not None and resume is None:
        try:  # carry AdamW moments over the boundary; the learning rate comes from the new schedule
            kept = run.optimizer_state
            opt.load_state_dict(
                {
                    "state": kept["state"],
                    "param_groups": [{**opt.param_groups[0], "params": kept["param_groups"][0]["params"]}],
                }
            )
            for g in opt.param_groups:
                g["lr"] = tc.lr * lr_multiplier(tc, steps, index)(0)
        except (ValueError, KeyError, IndexError) as e:
            raise ValueError(
                f"stages.{index}: train.optimizer_state=keep needs the same trainable parameters "
                f"as the previous stage ({e}); use reset"
            ) from None
    ctx.num_steps = steps
    start = 0
    if resume is not None:  # mid-stage checkpoint: weights/strategy/RNG already restored by the runner
        start = int(resume["step"])
        state = resume["optimizer_state"]
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    else:
        run.strategy.before_stage(ctx)
    wrapped, opt_w = acc.prepare(model, opt)
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
                    acc.backward(total / tc.grad_accum)
                raws.append(raw.detach())
                masks.append(batch["attention_mask"])
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
                acc.wait_for_everyone()
                if acc.is_main_process:
                    save_checkpoint(
                        run.run_dir,
                        f"stage{index}-step{step + 1}",
                        acc.unwrap_model(wrapped),
                        run.strategy,
                        {"stage": index, "step": step + 1, "done": False},
                        opt,
                        sched,
                        keep=tc.keep_checkpoints,
                    )
                    run.log(type="checkpoint", stage=index, step=step + 1)
                acc.wait_for_everyone()
    run.flush_log()
    model = acc.unwrap_model(wrapped)
    run.model = model
    run.optimizer_state = opt.state_dict() if tc.optimizer_state == "keep" else None
    ctx.model = model
    model.eval()
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
