"""Training speed of `lifelong`'s loop (naive strategy, the whole `train_stage` call: accelerate, hooks, schedule,
clipping, events) against a minimal hand-written PyTorch loop and against transformers' `Trainer`, paired.

    python bench/train_throughput.py [--steps 100] [--pairs 7] [--configs tiny,medium] [--profile]

Same model (reset to the same initial weights before every run), the same micro-batches in the same order
(`micro_batches` of the run's seed), the same steps, AdamW, gradient clipping, one torch thread, one process.
The three are run in pairs, the order alternated (hand lifelong trainer, then trainer lifelong hand, ...), so
the drift of a shared machine (1x-10x within minutes) hits both sides of a pair alike; the ratios are taken
inside each pair and reported as medians with their spread (min-max and the interquartile range), never as
best-of-each-side. Speed is tokens per CPU-second (`time.process_time`, the process's CPU time, which a loaded
machine inflates less than wall time) and tokens per wall-second.

The hand loop and the Trainer pad with `torch.nn.utils.rnn.pad_sequence` (written here, not `lifelong`'s
collate). All three use torch's single-tensor AdamW (`lifelong`'s default), or with `--fused` its fused kernel
(`train.fused_adamw: true`; the Trainer's default on torch >= 2.8); `--trainer-optim adamw_torch_fused` gives
the Trainer alone its default. `--profile` adds a cProfile of one lifelong and one hand run (top functions by
own time). `--progress` lets `lifelong` draw its progress bar into a terminal-like console (the bench runs it
quiet otherwise, like the hand loop and the Trainer without tqdm).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import pstats
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

CONFIGS: dict[str, dict[str, int]] = {
    "tiny": {},  # lifelong.testing's tiny llama: hidden 64, 2 layers (fixed overheads show)
    "medium": {  # compute shows
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
    },
}


def pad(examples: list[dict]) -> dict[str, torch.Tensor]:
    """The hand loop's and the Trainer's collator: right padding, labels -100 on padding."""
    seqs = [torch.tensor(e["input_ids"]) for e in examples]
    ids = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
    labels = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(e["labels"]) for e in examples], batch_first=True, padding_value=-100
    )
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Bench:
    """One model config: the run, its examples, the initial weights, the planned batches."""

    def __init__(self, name: str, steps: int, threads: int, out: Path, fused: bool, progress: bool = False) -> None:
        from lifelong.runner import Run
        from lifelong.testing import tiny_run_config
        from lifelong.train.loop import micro_batches
        from lifelong.validation import validate_raw

        raw = tiny_run_config("naive", n_stages=1, steps=steps, name=f"bench-{name}", output_dir=str(out))
        raw["torch_threads"] = threads
        raw["train"].update(max_length=64, batch_size=16, lr=1e-3, **({"fused_adamw": True} if fused else {}))
        if CONFIGS[name]:
            raw["model"]["tiny_config"] = CONFIGS[name]
        self.cfg = validate_raw(raw)
        from rich.console import Console

        terminal = Console(file=io.StringIO(), force_terminal=True, width=100)  # the bar as a terminal gets it
        self.run = Run(self.cfg, quiet=not progress, console=terminal)
        self.examples: list[dict] = self.run.prepared[0]
        self.init = copy.deepcopy(self.run.model.state_dict())
        self.tc = self.cfg.stage_train(0)
        self.steps, self.out, self.fused = steps, out, fused
        it = micro_batches(len(self.examples), self.tc.batch_size, self.cfg.seed, 0)
        self.batches = [[self.examples[i] for i in next(it)] for _ in range(steps)]
        self.tokens = sum(len(e["input_ids"]) for b in self.batches for e in b)
        self.n_params = sum(p.numel() for p in self.run.model.parameters())

    def reset(self) -> torch.nn.Module:
        model = self.run.model
        model.load_state_dict(self.init)
        model.train()
        return model

    def hand(self) -> None:
        model = self.reset()
        opt = torch.optim.AdamW(
            model.parameters(), lr=self.tc.lr, betas=self.tc.betas, weight_decay=self.tc.weight_decay, fused=self.fused
        )
        for b in self.batches:
            loss = model(**pad(b)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.tc.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        model.eval()

    def lifelong(self) -> None:
        from lifelong.train.loop import train_stage

        self.reset()
        for f in self.run.run_dir.glob("events.jsonl"):
            f.unlink()  # each run appends its step events; keep the file from growing across runs
        cost = train_stage(self.run, 0, self.examples)
        if cost["tokens"] != self.tokens:
            raise SystemExit(f"lifelong trained on {cost['tokens']} tokens, the others on {self.tokens}")

    def trainer(self, optim: str) -> None:
        from transformers import PrinterCallback, Trainer, TrainingArguments

        model = self.reset()
        flat = [e for b in self.batches for e in b]

        class Stream(torch.utils.data.IterableDataset):  # in order: the Trainer sees the same batches
            def __iter__(self) -> Any:
                return iter(flat)

        args = TrainingArguments(
            output_dir=str(self.out / "trainer"),
            max_steps=self.steps,
            per_device_train_batch_size=self.tc.batch_size,
            learning_rate=self.tc.lr,
            weight_decay=self.tc.weight_decay,
            adam_beta1=self.tc.betas[0],
            adam_beta2=self.tc.betas[1],
            max_grad_norm=self.tc.max_grad_norm,
            lr_scheduler_type="constant",
            optim=optim or ("adamw_torch_fused" if self.fused else "adamw_torch"),
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=self.cfg.seed,
        )
        trainer = Trainer(model=model, args=args, train_dataset=Stream(), data_collator=pad)
        trainer.remove_callback(PrinterCallback)  # its end-of-training summary line
        trainer.train()
        model.eval()


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return f"{statistics.median(xs):.3f}  (IQR {q[0]:.3f}-{q[2]:.3f}, min-max {min(xs):.3f}-{max(xs):.3f})"


def profile(b: Bench, side: str, fn: Callable[[], None], top: int) -> None:
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    print(f"\n--- profile: {side}, {b.steps} steps, {st.total_tt:.3f} s (top {top} by own time) ---")  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(top)
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip() and "function calls" not in line))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--configs", default="tiny,medium")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fused", action="store_true", help="fused AdamW on all three sides (train.fused_adamw)")
    ap.add_argument("--trainer-optim", default="", help="the Trainer's `optim` (default: the others' AdamW)")
    ap.add_argument("--no-trainer", action="store_true")
    ap.add_argument("--progress", action="store_true", help="lifelong draws its progress bar (as on a terminal)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    if a.pairs < 1:
        raise SystemExit("--pairs must be >= 1 (5 or more for a median worth reading)")

    out = Path(tempfile.mkdtemp(prefix="lifelong-train-bench-"))
    try:
        for name in a.configs.split(","):
            b = Bench(name, a.steps, a.threads, out / name, a.fused, a.progress)
            sides: dict[str, Callable[[], None]] = {"hand": b.hand, "lifelong": b.lifelong}
            if not a.no_trainer:
                sides["trainer"] = partial(b.trainer, a.trainer_optim)
            for fn in sides.values():  # warm-up: first-call costs (allocator, lazy imports) out of the pairs
                fn()
            cpu: dict[str, list[float]] = {k: [] for k in sides}
            wall: dict[str, list[float]] = {k: [] for k in sides}
            for i in range(a.pairs):
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                for k in order:
                    c, w = timed(sides[k])
                    cpu[k].append(c)
                    wall[k].append(w)
            print(
                f"\n== {name}: {b.n_params / 1e6:.2f}M params, {a.steps} steps of {b.tc.batch_size} x <=64 tokens "
                f"({b.tokens:,} tokens), {a.threads} thread(s), {'fused' if a.fused else 'single-tensor'} AdamW, "
                f"{a.pairs} pairs (order alternated) =="
            )
            for k in sides:
                tpc = [b.tokens / c for c in cpu[k]]
                tpw = [b.tokens / w for w in wall[k]]
                print(
                    f"{k:9s} tokens/CPU-s median {statistics.median(tpc):9,.0f}   "
                    f"tokens/wall-s median {statistics.median(tpw):9,.0f}"
                )
            for ref in [k for k in sides if k != "lifelong"]:
                target = 0.95 if ref == "hand" else 1.0
                r_cpu = [cpu[ref][i] / cpu["lifelong"][i] for i in range(a.pairs)]  # same tokens on both sides
                r_wall = [wall[ref][i] / wall["lifelong"][i] for i in range(a.pairs)]
                print(f"lifelong / {ref:7s} tokens per CPU-s : {spread(r_cpu)}   target >= {target}")
                print(f"lifelong / {ref:7s} tokens per wall-s: {spread(r_wall)}")
            if a.profile:
                profile(b, "lifelong train_stage", b.lifelong, a.top)
                profile(b, "hand loop", b.hand, a.top)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
