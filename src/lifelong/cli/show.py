"""`lifelong show RUN_DIR...`: the results matrix, metrics and costs as tables; the stage models the run holds
(content hash, parent, size); progress of a run still going. `lifelong show RUN --examples TASK [--stage K]
[--diff RUN2]`: the items behind one cell (docs/eval.md, "Per-item records")."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="print a run's results matrix and metrics (several runs: side by side)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument(
        "--examples",
        metavar="TASK",
        help="print the items behind one cell of the matrix: id, prediction, gold, score (examples/<task>/<row>.jsonl)",
    )
    p.add_argument(
        "--stage",
        metavar="K",
        help="with --examples: the row, as a stage name, `baseline`, or a stage index (0-based, -1 = baseline); "
        "default: the last row scored",
    )
    p.add_argument(
        "--diff", metavar="RUN2", help="with --examples: only the items whose prediction or score differ in RUN2"
    )


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lifelong.report.table import print_comparison, print_run, print_stage_models
    from lifelong.stage_models import list_stage_models

    console = Console()
    if args.examples is not None or args.stage is not None or args.diff is not None:
        return show_examples(args, console)
    for d in args.run_dirs:
        if not (Path(d) / "config.yaml").exists():
            raise ValueError(f"{d}: not a run directory (no config.yaml)")
        print_run(Path(d), console)
        try:
            models = [asdict(m) for m in list_stage_models(Path(d))]
        except ValueError as e:  # a config an older or newer lifelong wrote: the tables above still hold
            console.print(f"stage models: not listed ({e})", style="dim", markup=False)
            continue
        print_stage_models(models, console, f"{Path(d).name}: stage models")
    if len(args.run_dirs) > 1:
        print_comparison([Path(d) for d in args.run_dirs], console)
    return 0


def _short(v: Any, width: int = 40) -> str:
    text = "—" if v is None else (" | ".join(map(str, v)) if isinstance(v, list) else str(v))
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def show_examples(args: argparse.Namespace, console: Any) -> int:
    """The items of one cell as a table (or, with --diff, the items that differ in another run)."""
    from rich.markup import escape
    from rich.table import Table

    from lifelong.eval.results import cell_of, diff_examples, read_examples

    if args.examples is None:
        raise ValueError("--stage and --diff go with --examples TASK (the eval task whose items to show)")
    if len(args.run_dirs) != 1:
        raise ValueError("--examples shows one run's items: give one run directory (compare with --diff RUN2)")
    run = Path(args.run_dirs[0])
    res, task, row = cell_of(run, args.examples, args.stage)
    recs = read_examples(run, task, row)
    cell = res["matrix"][res["rows"].index(row)][[t["name"] for t in res["tasks"]].index(task)]
    if args.diff is None:
        t = Table(title=escape(f"{res['name']}: {task} after {row} (cell {_num(cell)}; {len(recs)} items)"))
        for col in ("id", "prediction", "gold", "score"):
            t.add_column(col, justify="right" if col == "score" else "left")
        for r in recs:
            t.add_row(
                escape(str(r.get("id"))),
                escape(_short(r.get("prediction"))),
                escape(_short(r.get("gold"))),
                _num(r.get("score")),
            )
        console.print(t)
        return 0
    other = Path(args.diff)
    cell_of(other, task, row)  # the other run has the task and the row
    d = diff_examples(recs, read_examples(other, task, row))
    t = Table(
        title=escape(
            f"{task} after {row}: {run.name} vs {other.name} ({len(d['changed'])} of {d['paired']} items differ)"
        )
    )
    for col in (
        "id",
        f"prediction {run.name}",
        f"prediction {other.name}",
        "gold",
        f"score {run.name}",
        f"score {other.name}",
    ):
        t.add_column(escape(col), justify="right" if col.startswith("score") else "left")
    for a, b in d["changed"]:
        t.add_row(
            escape(str(a["id"])),
            escape(_short(a.get("prediction"), 30)),
            escape(_short(b.get("prediction"), 30)),
            escape(_short(a.get("gold"), 30)),
            _num(a.get("score")),
            _num(b.get("score")),
        )
    console.print(t)
    for side, ids in ((run.name, d["only_a"]), (other.name, d["only_b"])):
        if ids:
            console.print(
                f"only in {side}: {len(ids)} items ({', '.join(ids[:5])}{', …' if len(ids) > 5 else ''})", markup=False
            )
    return 0
