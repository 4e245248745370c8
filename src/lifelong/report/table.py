"""Terminal tables of a run: the results matrix (rows = after stage, columns = eval task), the metrics with
95% CIs, the cost per stage, and progress of a run still going (from the event log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
    for task, kept in (res.get("also") or {}).items():  # further scores kept beside the matrix (acc_norm, P, R)
        for also in [kept] if isinstance(kept, dict) else kept:
            shown = ", ".join(f"{escape(row)} {_fmt(v)}" for row, v in also["rows"].items())
            console.print(f"{escape(task)}: {escape(also['metric'])} (beside the matrix's score): {shown}", markup=True)
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
    print_costs(res.get("costs", {}), console)
    events = read_events(Path(run_dir))
    if events and events[-1].get("type") != "end":
        steps = [e for e in events if e.get("type") == "step"]
        last = steps[-1] if steps else None
        where = f"stage {last['stage']} step {last['step'] + 1}, loss {last['loss']:.4f}" if last else "starting"
        console.print(f"[yellow]run in progress or interrupted: {where}[/]")


COST_FIRST = (
    "wall_s",
    "steps",
    "tokens",
    "trainable_params",
    "peak_memory_mb",
    "disk_mb",
    "checkpoint_mb",
    "export_mb",
)
"""Cost columns in this order (strategies' own figures follow, by name)."""


def print_costs(costs: dict[str, dict], console: Optional[Console] = None) -> None:
    """The cost of every stage: time, steps, tokens, trainable parameters, memory, disk (checkpoints and
    exports written for it, in MiB) and the strategy's own figures."""
    if not costs:
        return
    console = console or Console()
    keys = sorted(
        {k for c in costs.values() for k, v in c.items() if isinstance(v, (int, float))},
        key=lambda k: (COST_FIRST.index(k) if k in COST_FIRST else len(COST_FIRST), k),
    )
    t = Table(title="cost per stage (disk in MiB)")
    if len(keys) > len(costs):  # many figures, few stages: one row per figure, so names are never cut
        t.add_column("cost", overflow="fold")
        for stage in costs:
            t.add_column(escape(stage), justify="right", overflow="fold")
        for k in keys:
            t.add_row(escape(k), *[_num(c.get(k)) for c in costs.values()])
    else:
        t.add_column("stage", overflow="fold")
        for k in keys:
            t.add_column(escape(k), justify="right", overflow="fold")
        for stage, c in costs.items():
            t.add_row(escape(stage), *[_num(c.get(k)) for k in keys])
    console.print(t)


def _num(v: Any) -> str:
    if v is None:
        return "—"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"


def print_stage_models(models: list[dict], console: Optional[Console] = None, title: str = "stage models") -> None:
    """Stage models that exist in a run directory (rows of `lifelong.stage_models.list_stage_models`, as
    dicts): stage, where, what, parent, size and short content hash."""
    console = console or Console()
    if not models:
        console.print(f"{title}: none kept (export.stages, train.keep_checkpoints)", style="dim", markup=False)
        return
    t = Table(title=title)
    for col in ("stage", "where", "what", "parent", "size MiB", "content hash"):
        t.add_column(col, justify="right" if col == "size MiB" else "left")
    for m in models:
        h = m.get("content_hash")
        t.add_row(
            *[escape(str(m[k])) for k in ("stage", "where", "what", "parent")],
            f"{m['bytes'] / 2**20:,.2f}",
            h[:12] if h else "—",
        )
    console.print(t)


def print_runs(runs: list[dict], console: Optional[Console] = None) -> None:
    """One line per run directory: name, stages done / total, strategy, the stage models that exist."""
    console = console or Console()
    t = Table(title="runs")
    for col in ("run", "stages done", "strategy", "stage models"):
        t.add_column(col)
    for r in runs:
        t.add_row(escape(r["name"]), r["progress"], escape(r["strategy"]), escape(r["models"]))
    console.print(t)


def print_comparison(
    run_dirs: list[Path],
    console: Optional[Console] = None,
    paired: Optional[dict] = None,
    summaries: Optional[list[dict]] = None,
) -> None:
    """Runs of one stream side by side, within the terminal's width (80 columns included): the runs (full names
    and strategies, wrapped, never cut; with `summaries` (`report.compare.summary` rows) the new-stage score and
    training time), the metrics of every group, and with `paired` (`eval.compare_stats.paired_compare`) the
    difference of each run to the reference with its CI, p-value and verdict, for every metric and cell."""
    console = console or Console()
    results: list[dict[str, Any]] = [json.loads((Path(d) / "results.json").read_text()) for d in run_dirs]
    cols = [("run", "text"), ("strategy", "text")] + ([("new-stage", "num"), ("train s", "num")] if summaries else [])
    rows = []
    for k, res in enumerate(results):
        row = [res["name"], " + ".join(res.get("strategy", []))]
        rows.append(row + ([_fmt(summaries[k]["new"]), f"{summaries[k]['wall']:.1f}"] if summaries else []))
    console.print(_fitted(console, "runs compared", cols, rows))
    console.print()
    groups = [g for g, v in results[0].get("metrics", {}).items() if isinstance(v, dict) and "metrics" in v]
    for group in groups:
        console.print(f"metrics: {group_title(group, results[0]['metrics'][group])}", style="bold", markup=False)
        rows = []
        for res in results:
            g = res.get("metrics", {}).get(group)
            rows.append([res["name"], *[_fmt(g["metrics"].get(m)) if g else "—" for m in METRICS]])
        console.print(_fitted(console, None, [("run", "text"), *[(m, "num") for m in METRICS]], rows))
        console.print()
    if paired:
        print_differences(paired, console)


def print_differences(paired: dict, console: Optional[Console] = None) -> None:
    """The paired differences of each run to the reference (`eval.compare_stats.paired_compare`): a table of
    metrics per group and one of matrix cells, each row: difference, CI, p-value, verdict."""
    console = console or Console()
    stats = [("diff", "num"), (f"{100 * paired['level']:g}% CI", "num"), ("p", "num"), ("verdict", "left")]
    console.print(f"paired differences to the reference {paired['reference']}", style="bold", markup=False)
    console.print(paired["method"], style="dim", markup=False)
    for c in paired["comparisons"]:
        head = f"{c['run']} - {paired['reference']}"
        ms = [(f"{grp} ({g['unit']})", m, e) for grp, g in c["metrics"].items() for m, e in g["metrics"].items()]
        cols = [("group", "text"), ("metric", "left"), *stats]
        console.print(_fitted(console, f"{head}: metrics", cols, [[a, b, *_diff(e)] for a, b, e in ms], ms))
        console.print()
        cells = [(e["task"], e["row"], e) for e in c["cells"]]
        cols = [("eval task", "text"), ("after", "text"), *stats]
        rows = [[a, b, *_diff(e)] for a, b, e in cells]
        console.print(_fitted(console, f"{head}: matrix cells", cols, rows, cells))
        console.print()


def _diff(e: dict) -> list[str]:
    return [f"{e['difference']:+.2f}", f"[{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]", f"{e['p']:.3f}", e["verdict"]]


VERDICT_STYLE = {"better": "green", "worse": "red"}


def _fitted(
    console: Console,
    title: Optional[str],
    columns: list[tuple[str, str]],
    rows: list[list[str]],
    entries: Optional[list[tuple[str, str, dict]]] = None,
) -> Table:
    """A table as wide as its content, at most the console's width: numbers ("num", "left") keep their width;
    text columns ("text": names) share the rest, the narrower ones whole first, the widest wrapping (folded,
    never cut with "..."). Cells are plain text (no markup); `entries` colour rows by verdict."""
    n = len(columns)
    natural = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, (h, _) in enumerate(columns)]
    fixed = sum(w for w, (_, kind) in zip(natural, columns) if kind != "text")
    text = [i for i, (_, kind) in enumerate(columns) if kind == "text"]
    room = console.width - fixed - (3 * n - 3)  # padding 1 | rule | 1 between columns, none at the edges
    room = max(room, 4 * len(text))
    width = dict(enumerate(natural))
    for pos, i in enumerate(sorted(text, key=lambda i: natural[i])):  # water-filling: small columns whole
        width[i] = min(natural[i], room // (len(text) - pos))
        room -= width[i]
    t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", show_edge=False, pad_edge=False)
    for i, (h, kind) in enumerate(columns):
        if kind == "text":
            t.add_column(h, overflow="fold", width=width[i])
        else:
            t.add_column(h, justify="right" if kind == "num" else "left", no_wrap=True, width=width[i])
    for k, r in enumerate(rows):
        style = VERDICT_STYLE.get(entries[k][2]["verdict"], "") if entries else ""
        t.add_row(*[Text(v) for v in r], style=style)
    return t
