"""`lifelong show RUN_DIR...`: the results matrix, metrics and costs as tables; the stage models the run holds
(content hash, parent, size); progress of a run still going."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="print a run's results matrix and metrics (several runs: side by side)")
    p.add_argument("run_dirs", nargs="+")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lifelong.report.table import print_comparison, print_run, print_stage_models
    from lifelong.stage_models import list_stage_models

    console = Console()
    for d in args.run_dirs:
        if not (Path(d) / "config.yaml").exists():
            raise ValueError(f"{d}: not a run directory (no config.yaml)")
        print_run(Path(d), console)
        try:
            models = [asdict(m) for m in list_stage_models(Path(d))]
        except ValueError as e:  # a config an older or newer lifelong wrote: the tables above still hold
            console.print(f"stage models: not listed ({e})", style="dim", markup=False)
            continue
        print_stage_models(models, console, f"{Path(d).name}: stage models")
    if len(args.run_dirs) > 1:
        print_comparison([Path(d) for d in args.run_dirs], console)
    return 0
