"""`lifelong merge MERGE.yaml --out DIR [key=value ...]`: merge models from a mergekit YAML, taken as is
(`models:` or `slices:`, parameters with gradients and filters, dtype, tokenizer_source, ...)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge models from a mergekit YAML (every method `lifelong ls merges` lists; slices, gradients, "
        "filters) into a new model dir",
    )
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True, help="output model directory (must not exist)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lifelong.fileio import ensure_writable_dir
    from lifelong.merging.engine import load_merge_config, merge_models

    cfg = load_merge_config(args.config, args.overrides)
    # before reading any tensor
    ensure_writable_dir(Path(args.out).resolve().parent, f"the folder of --out {args.out}:", create=False)
    print(merge_models(cfg, args.out))
    return 0
