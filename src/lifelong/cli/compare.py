"""`lifelong compare RUN_DIR... [--reference RUN] [--out compare.html]`: runs of one stream side by side, and the
paired difference of each to a reference run (bootstrap CI and permutation p-value over the shared eval items;
seeds pooled), in the terminal and in compare.html."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare runs of the same stream: paired differences to a reference (table + compare.html)"
    )
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="compare.html")
    p.add_argument(
        "--reference", default=None, help="the run the others are compared to (directory or name; default: the first)"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates of the paired CIs (default 1000)")
    p.add_argument("--n-perm", type=int, default=1000, help="permutations of the paired p-values (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the CIs (default 0.95)")
    p.add_argument(
        "--per-run",
        action="store_true",
        help="compare every run on its own instead of pooling runs that differ only in seed into one configuration",
    )


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from lifelong.report.compare import build_compare
    from lifelong.report.table import print_comparison

    path, rows, paired, note = build_compare(
        args.run_dirs,
        args.out,
        args.reference,
        n_boot=args.n_boot,
        n_perm=args.n_perm,
        seed=args.seed,
        level=args.level,
        pool_seeds=not args.per_run,
    )
    console = Console()
    print_comparison([Path(d) for d in args.run_dirs], console, paired, rows)
    if note:
        console.print(note, style="yellow", markup=False)
    print(path)
    return 0
