"""`lifelong edit-bench EDITS.jsonl --model M --methods grace,rome --every K --out DIR [--general FILE]
[--known FILE] [method.key=value ...]`: the sequential-editing benchmark. Each method applies the requests one
after another to the unedited model; every K edits, efficacy / generalization / locality of all edits so
far and of the recent ones, and general ability, are recorded (curves.json) and drawn (report.html)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "edit-bench",
        help="sequential-editing benchmark: curves of edit retention and general ability over 100s-1000s of edits",
    )
    p.add_argument("requests", help="edit requests (.jsonl; format in docs/editing.md), applied in file order")
    p.add_argument(
        "overrides", nargs="*", help="method parameters as method.key=value (e.g. rome.layer=5 grace.eps_init=0.5)"
    )
    p.add_argument("--model", required=True, help="a model directory or hub id, or package:<PyPI package>")
    p.add_argument("--methods", required=True, help="comma-separated editing methods (`lifelong ls editors`)")
    p.add_argument("--every", type=int, required=True, help="a point of the curves every K edits (and after the last)")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument(
        "--general",
        default=None,
        help="held-out text file (.jsonl with a text field, .txt) whose perplexity is tracked",
    )
    p.add_argument("--general-tokens", type=int, default=20000, help="tokens of --general scored at each point")
    p.add_argument(
        "--known",
        default=None,
        help="facts the model knows ({prompt, target} rows, or edit requests with target_true): the share kept",
    )
    p.add_argument("--window", type=int, default=None, help="the 'recent' edits scored apart (default: --every)")
    p.add_argument("--group", type=int, default=1, help="requests per editor call (default 1)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N requests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from lifelong.editing.sequential_bench import run_bench
    from lifelong.fileio import ensure_writable_dir
    from lifelong.report.edit_curves import markdown_table, write_report

    ensure_writable_dir(args.out, "--out", create=False)  # before any model loads
    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    for flag, v in (("--group", args.group), ("--window", args.window or 1), ("--limit", args.limit or 1)):
        if v < 1:
            raise ValueError(f"{flag} must be at least 1, got {v}")
    curves = run_bench(
        args.requests,
        args.model,
        [m.strip() for m in args.methods.split(",") if m.strip()],
        args.out,
        args.every,
        args.overrides,
        window=args.window,
        group=args.group,
        general=args.general,
        general_tokens=args.general_tokens,
        known=args.known,
        limit=args.limit,
        seed=args.seed,
        quiet=args.quiet,
    )
    report = write_report(args.out)
    print(markdown_table(curves))
    print(f"wrote {Path(args.out) / 'curves.json'} and {report}")
    return 0
