"""`lifelong run CONFIG [key=value ...] [--resume]`: train through the stream and evaluate after each stage.
`--resume` of a run that already finished says so, shows its results and exits 0 without loading anything."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a continual-learning stream from a YAML config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=3e-4")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lifelong.report.html import build_report
    from lifelong.report.table import print_run
    from lifelong.runner import Run, RunFinished
    from lifelong.validation import load_config

    _diagnose_aborts()
    cfg = load_config(args.config, args.overrides)
    try:
        run = Run(cfg, resume=args.resume, quiet=args.quiet)
    except RunFinished as done:  # the wanted state already holds: say so, show it, exit 0
        print(done)
        print_run(Path(cfg.output_dir) / cfg.name, Console())
        return 0
    run.execute()
    if run.accelerator.is_main_process:
        build_report(run.run_dir)
        print_run(run.run_dir, run.console)
    _close_process_group()
    return 0


def _diagnose_aborts() -> None:
    """Under a launcher (WORLD_SIZE > 1) a process killed by a C++ abort would otherwise die without a word
    about where; faulthandler prints every Python thread's stack to stderr on SIGABRT/SIGSEGV."""
    import faulthandler
    import os
    import sys

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not faulthandler.is_enabled():
        faulthandler.enable(file=sys.stderr, all_threads=True)


def _close_process_group() -> None:
    """End a multi-process run's process group once every process is done, and mark the process for a
    hard exit (`lifelong.cli.entry`): interpreter shutdown after a finished gloo run aborted a process twice
    in CI ("terminate called without an active exception", after results.json was written; Python stops
    daemon threads that are inside C++ frames by unwinding them, which C++ answers with std::terminate),
    which fails the whole launch. Nothing is left to lose at that point: every file is written and closed."""
    import torch.distributed as dist

    from lifelong import cli

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        cli.HARD_EXIT = True
