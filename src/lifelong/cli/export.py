"""`lifelong export RUN_DIR [--stage NAME] --out DIR [--format hf|peft] [--merged]`: a stage's model out of a
run directory, after the fact, as a Hugging Face model directory or a PEFT adapter (docs/export.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a stage's model of a run as a Hugging Face or PEFT directory")
    p.add_argument("run_dir")
    p.add_argument("--stage", default=None, help="stage name (default: the last stage of the stream)")
    p.add_argument("--out", required=True, help="a new folder to write the model into")
    p.add_argument("--format", choices=("hf", "peft"), default="hf", help="hf: full weights; peft: the adapter")
    p.add_argument("--merged", action="store_true", help="with --format peft: also the merged weights in merged/")


def main(args: argparse.Namespace) -> int:
    from lifelong.stage_models import export_from_run

    lin = export_from_run(Path(args.run_dir), Path(args.out), args.stage, args.format, args.merged)
    size = lin.get("bytes")
    print(
        f"{args.out}: stage {lin['stage']} of run {lin['run']} as {lin['format']}"
        + (f", {size / 2**20:,.2f} MiB" if size else "")
        + f", content hash {(lin.get('content_hash') or '?')[:12]}, parent {lin['parent']['name']}"
    )
    return 0
