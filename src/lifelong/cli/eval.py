"""`lifelong eval MODEL (--tasks EVAL.yaml | --config RUN.yaml) [--out DIR] [--batch-size N] [key=value ...]`:
score eval tasks on a model without training it, and print each score with its 95% CI (docs/eval.md)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score eval tasks on any model (hub id, folder, .gguf, package:NAME, RUN_DIR[:STAGE]), no training",
    )
    p.add_argument(
        "model",
        help="a hub id, a local model folder, a .gguf file, package:<PyPI package shipping a GGUF>, or a run's "
        "stage as RUN_DIR:STAGE (RUN_DIR alone: its last stage)",
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. eval.max_examples=20")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--tasks", help="a YAML list of eval tasks, each as an entry of a run config's eval.probes")
    what.add_argument("--config", help="a run config: its eval suite (the stages' eval tasks and the probes)")
    p.add_argument("--out", help="output folder, new or empty (default evals/<model>-<timestamp>)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per forward pass (default eval.batch_size)")
    p.add_argument("--quiet", action="store_true", help="no progress (bars on a terminal, one line per task otherwise)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lifelong.evaluate import default_out, evaluate, plan

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: give a whole number >= 1")
    p = plan(args.model, tasks=args.tasks, config=args.config, overrides=args.overrides, batch_size=args.batch_size)
    result = evaluate(p, args.out if args.out else default_out(p.spec), quiet=args.quiet)
    console = Console()
    print_scores(result.tasks, f"{args.model}: {len(result.tasks)} eval tasks", console)
    console.print(f"wrote {result.out_dir}", markup=False)
    return 0


def print_scores(tasks: list[dict], title: str, console: Any) -> None:
    """One row per task: metric and direction, items, score and its 95% bootstrap CI."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(title))
    for col in ("task", "metric", "n", "score", "95% CI"):
        t.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for r in tasks:
        unit = f" ({r['unit']})" if r.get("unit") not in (None, "%", r["metric"]) else ""
        arrow = "↑" if r["higher_is_better"] else "↓"
        ci = r.get("ci95")
        t.add_row(
            escape(r["name"]),
            escape(f"{r['metric']}{unit} {arrow}"),
            str(r["n"]),
            f"{r['score']:.2f}",
            f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "—",
        )
    console.print(t)
