"""`lifelong runs [DIR]`: the run directories under DIR (default `runs`): stages done of the stream, strategy,
and the stage models each holds (exports, kept weights, stage-end checkpoints)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list run directories with their progress and stage models")
    p.add_argument("dir", nargs="?", default="runs", help="folder holding run directories (default: runs)")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lifelong.report.table import print_runs
    from lifelong.stage_models import list_stage_models, read_run_config

    root = Path(args.dir)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder; give the output_dir runs were written to (default: runs)")
    rows = []
    for d in sorted(p for p in root.iterdir() if (p / "config.yaml").is_file()):
        try:
            cfg = read_run_config(d)
        except ValueError as e:
            rows.append({"name": d.name, "progress": "?", "strategy": "?", "models": str(e)})
            continue
        done = 0
        try:
            res = json.loads((d / "results.json").read_text(encoding="utf-8"))
            done = sum(1 for row in res["matrix"][1:] if row and all(v is not None for v in row))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        by_stage: dict[str, list[str]] = {}
        for m in list_stage_models(d, hashes=False):
            by_stage.setdefault(m.stage, []).append(m.what)
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in by_stage.items()) or "—"
        rows.append(
            {
                "name": d.name,
                "progress": f"{done}/{len(cfg.stages)}",
                "strategy": " + ".join(s.name for s in cfg.strategy),
                "models": listed,
            }
        )
    if not rows:
        print(f"{root}: no run directories (folders with a config.yaml)")
        return 0
    print_runs(rows, Console())
    return 0
