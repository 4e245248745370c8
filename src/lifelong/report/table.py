"""Terminal tables of a run: the results matrix (rows = after stage, columns = eval task), the metrics with
95% CIs, the cost per stage, and progress of a run still going (from the event log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lifelong.eval.metrics import METRICS


def read_events(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / "events.jsonl"
    out = []
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: ignore
                pass
    return out


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.2f}"


def group_title(group: str, g: dict) -> str:
    """A metrics group as people read it: its tasks, the unit of its metrics and the score's direction."""
    unit = g.get("unit")  # runs from before units were recorded have none
    if unit and unit != g.get("score_unit", unit):
        unit = f"{unit}, the log of {g['score_unit']}"
    where = f" in {unit}" if unit else ""
    hib = g.get("higher_is_better")
    way = "" if hib is None else f", {'higher' if hib else 'lower'} score is better"
    return f"{group}{where}{way}: {', '.join(g['tasks'])}"


def print_run(run_dir: Path, console: Optional[Console] = None) -> None:
    console = console or Console()
    rp = Path(run_dir) / "results.json"
    if not rp.exists():
        console.print(f"[yellow]{run_dir}: no results yet[/]")
        return
    res = json.loads(rp.read_text())
    t = Table(title=f"{res['name']}: results matrix ({' + '.join(res.get('strategy', []))})")
    t.add_column("after stage")
    for task in res["tasks"]:
        arrow = "↑" if task["higher_is_better"] else "↓"
        t.add_column(escape(f"{task['name']}\n{task['metric']} {arrow}"), justify="right")
    for r, row in enumerate(res["rows"]):
        t.add_row(row, *[_fmt(v) for v in res["matrix"][r]])
    console.print(t)
    for group, g in res.get("metrics", {}).items():
        if not (isinstance(g, dict) and "metrics" in g):
            continue
        console.print(f"[bold]metrics: {escape(group_title(group, g))}[/]")  # a line, not a title wrapped narrow
        mt = Table()
        for m in ("metric", "value", "95% CI"):
            mt.add_column(m, justify="right" if m != "metric" else "left")
        for m in METRICS:
            ci = g["ci95"].get(m)
            mt.add_row(m, _fmt(g["metrics"].get(m)), f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "—")
        console.print(mt)
    if res.get("metrics", {}).get("convention"):
        console.print(res["metrics"]["convention"], style="dim", markup=False)
    events = read_events(Path(run_dir))
    if events and events[-1].get("type") != "end":
        steps = [e for e in events if e.get("type") == "step"]
        last = steps[-1] if steps else None
        where = f"stage {last['stage']} step {last['step'] + 1}, loss {last['loss']:.4f}" if last else "starting"
        console.print(f"[yellow]run in progress or interrupted: {where}[/]")


def print_comparison(run_dirs: list[Path], console: Optional[Console] = None) -> None:
    console = console or Console()
    t = Table(title="comparison (score group)")
    t.add_column("run")
    t.add_column("strategy")
    for m in METRICS:
        t.add_column(m, justify="right")
    for d in run_dirs:
        res: dict[str, Any] = json.loads((Path(d) / "results.json").read_text())
        ms = res.get("metrics", {})
        g = ms.get("score") or next((v for v in ms.values() if isinstance(v, dict) and "metrics" in v), None)
        vals = [_fmt(g["metrics"].get(m)) if g else "—" for m in METRICS]
        t.add_row(res["name"], " + ".join(res.get("strategy", [])), *vals)
    console.print(t)
