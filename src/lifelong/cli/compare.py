"""`lifelong compare RUN_DIR... [--out compare.html]`: runs of one stream side by side, in HTML and the terminal."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare runs of the same stream (table + compare.html)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="compare.html")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lifelong.eval.metrics import METRICS
    from lifelong.report.compare import build_compare

    path, rows = build_compare(args.run_dirs, args.out)
    t = Table(title="comparison")
    for c in ["run", "strategy", *METRICS, "new-stage", "train s"]:
        t.add_column(c, justify="left" if c in ("run", "strategy") else "right")
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rows:
        t.add_row(
            r["name"], r["strategy"], *[fmt(r["metrics"].get(m)) for m in METRICS], fmt(r["new"]), f"{r['wall']:.1f}"
        )
    Console().print(t)
    print(path)
    return 0
