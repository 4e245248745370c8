"""`lifelong report RUN_DIR [--out FILE]`: write the run's self-contained report.html."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/report.html)")


def main(args: argparse.Namespace) -> int:
    from lifelong.report.html import build_report

    print(build_report(args.run_dir, args.out))
    return 0
