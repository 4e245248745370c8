"""`compare.html` and a terminal table over several runs of the same stream: metrics side by side, the
stability-plasticity scatter (forgetting vs score on each stage's own task right after it) with the Pareto
front, and the paired differences of every metric and cell to a reference run (`eval/compare_stats.py`) as a
forest plot and tables. Runs of different streams, or scored on different eval items, are refused, naming the
first difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from lifelong.eval.compare_stats import NOT_DISTINGUISHABLE, RunData, paired_compare
from lifelong.eval.metrics import METRICS
from lifelong.eval.results import examples_path, read_examples
from lifelong.fileio import atomic_write_text
from lifelong.report import plots
from lifelong.report.html import environment, load_run


def stream_of(run: dict) -> dict:
    """What makes runs comparable: the same stages (names, in order) scored on the same eval tasks. How a
    stage updates the model (its kind, data, strategy, hyper-parameters) may differ: that is what is compared."""
    cfg = yaml.safe_load(run["config"]) or {}

    def ev(e):  # retrieval is part of the route, not of the task
        return {k: v for k, v in e.items() if k != "retrieve"} if isinstance(e, dict) else e

    return {
        "stages": [{"name": s.get("name"), "eval": ev(s.get("eval"))} for s in cfg.get("stages") or []],
        "probes": [ev(p) for p in (cfg.get("eval") or {}).get("probes") or []],
    }


def check_same_stream(runs: list[dict]) -> None:
    from lifelong.configio import first_difference

    ref = stream_of(runs[0])
    for r in runs[1:]:
        diff = first_difference(ref, stream_of(r))
        if diff:
            raise ValueError(
                f"{r['dir']} ran a different stream than {runs[0]['dir']}: first difference at "
                f"{diff}; compare only runs of the same stages and eval tasks"
            )


def summary(run: dict) -> dict[str, Any]:
    res = run["results"]
    metrics = res.get("metrics", {})
    groups = [k for k, v in metrics.items() if isinstance(v, dict) and "metrics" in v]
    group = "score" if "score" in groups else (groups[0] if groups else None)
    g = metrics.get(group) if group else None
    diag: Optional[float] = None
    if g:
        cols = [j for j, t in enumerate(res["tasks"]) if t["name"] in g["tasks"]]
        diag = float(np.mean([res["matrix"][res["tasks"][j]["stage"] + 1][j] for j in cols]))
    costs = res.get("costs", {}).values()
    return {
        "name": res["name"],
        "strategy": " + ".join(res.get("strategy", [])),
        "group": group,
        "metrics": g["metrics"] if g else {},
        "ci": g["ci95"] if g else {},
        "new": diag,
        "wall": sum(c.get("wall_s", 0) for c in costs),
        "trainable": max((c.get("trainable_params", 0) for c in costs), default=0),
    }


def check_same_item_ids(runs: list[dict]) -> None:
    """Runs that keep per-item records (`examples/<task>/<row>.jsonl`) must have scored the same items in the same
    order, since their statistics pair by position: an edited eval file keeps the count but changes the ids."""
    ref = runs[0]
    for r in runs[1:]:
        for t in ref["results"]["tasks"]:
            row = next(
                (
                    w
                    for w in ref["results"]["rows"]
                    if all(examples_path(x["dir"], t["name"], w).is_file() for x in (ref, r))
                ),
                None,
            )  # a run scores the same items in every row: one row per task is enough
            if row is None:
                continue
            a, b = ([e.get("id") for e in read_examples(x["dir"], t["name"], row)] for x in (ref, r))
            diff = next((k for k, (x, y) in enumerate(zip(a, b)) if x is not None and y is not None and x != y), None)
            if diff is not None:
                raise ValueError(
                    f"{examples_path(r['dir'], t['name'], row)}: item {diff} is {b[diff]}, {ref['dir']} scored "
                    f"{a[diff]} there: the runs scored different eval items (an edited or reordered eval file); a "
                    "paired comparison needs the same items"
                )


def run_data(run: dict) -> RunData:
    """A loaded run directory (`html.load_run`) as the comparison statistics read it."""
    cfg = yaml.safe_load(run["config"]) if run["config"] else None
    return RunData(
        run["results"]["name"],
        run["results"],
        run["per_example"],
        cfg if isinstance(cfg, dict) else None,
        str(run["dir"]),
    )


def reference_index(runs: list[dict], reference: Optional[str]) -> int:
    """The run `reference` names (a run directory or a run's name); None: the first run."""
    if reference is None:
        return 0
    for i, r in enumerate(runs):
        if Path(reference).resolve() == Path(r["dir"]).resolve():
            return i
    named = [i for i, r in enumerate(runs) if r["results"]["name"] == reference]
    if len(named) == 1:
        return named[0]
    names = ", ".join(f"{r['dir']} ({r['results']['name']})" for r in runs)
    what = "names several" if named else "is not one of"
    raise ValueError(f"reference {reference!r} {what} the compared runs: {names}; give one of their directories")


def paired(runs: list[dict], reference: Optional[str] = None, **options: Any) -> dict[str, Any]:
    """Paired differences of every run's configuration to the reference's (`compare_stats.paired_compare`,
    whose keyword options pass through). Runs must be of one stream and hold their per-example statistics."""
    check_same_stream(runs)
    for r in runs:
        if not r["per_example"]:
            raise ValueError(
                f"{r['dir']}/per_example.json: missing or empty; a paired comparison needs every run's "
                "per-example statistics (every run writes them with results.json: rerun or resume it)"
            )
    check_same_item_ids(runs)
    return paired_compare([run_data(r) for r in runs], reference_index(runs, reference), **options)


MARKERS = "osD^vP*Xph"


def forest(result: dict[str, Any], max_cells: int = 60) -> str:
    """Forest plot of the paired differences: one panel per metric group, one per unit of the matrix's cells
    (when at most `max_cells` per comparison), a row per metric or cell, each comparison its marker; green =
    better than the reference, red = worse, grey = not distinguishable (CI covers 0)."""
    plt = plots._plt()
    panels: list[tuple[str, list[str], list[list[dict]]]] = []  # (title, row labels, per comparison entries)
    comps = result["comparisons"]
    for group, g in comps[0]["metrics"].items():
        ms = list(g["metrics"])
        panels.append(
            (f"{group} metrics ({g['unit']})", ms, [[c["metrics"][group]["metrics"][m] for m in ms] for c in comps])
        )
    units = sorted({e["unit"] for e in comps[0]["cells"]})
    for unit in units:
        keep = [i for i, e in enumerate(comps[0]["cells"]) if e["unit"] == unit]
        if len(keep) > max_cells:
            continue
        labels = [f"{comps[0]['cells'][i]['task']} after {comps[0]['cells'][i]['row']}" for i in keep]
        panels.append((f"cells ({unit})", labels, [[c["cells"][i] for i in keep] for c in comps]))
    heights = [max(1.0, 0.28 * len(labels) * (1 + 0.35 * (len(comps) - 1))) for _, labels, _ in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(7, 0.9 * len(panels) + sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    colour = {"better": "tab:green", "worse": "tab:red", NOT_DISTINGUISHABLE: "tab:gray"}
    for ax, (title, labels, entries) in zip(axes[:, 0], panels):
        step = 0.7 / max(1, len(comps))
        for k, (comp, rows) in enumerate(zip(comps, entries)):
            for i, e in enumerate(rows):
                y = i + (k - (len(comps) - 1) / 2) * step
                lo, hi = e["ci"]
                ax.errorbar(
                    e["difference"],
                    y,
                    xerr=[[e["difference"] - lo], [hi - e["difference"]]],
                    fmt="none",
                    ecolor=colour[e["verdict"]],
                    elinewidth=1.5,
                    capsize=3,
                )
                ax.plot(
                    e["difference"],
                    y,
                    MARKERS[k % len(MARKERS)],
                    color=colour[e["verdict"]],
                    mfc="white" if e["verdict"] == NOT_DISTINGUISHABLE else colour[e["verdict"]],
                    label=comp["run"] if i == 0 else None,
                )
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel(
        f"difference to {result['reference']} (run - reference), {100 * result['level']:g}% paired CI"
    )
    if len(comps) > 1:
        axes[0, 0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return plots._svg(fig)


def build_compare(
    run_dirs: list[Path], out: Path, reference: Optional[str] = None, **options: Any
) -> tuple[Path, list[dict], Optional[dict], str]:
    """Write compare.html; returns its path, a summary row per run, the paired differences (None when a run
    has no per-example statistics) and why they are missing ("" when present). `options` go to `paired`."""
    runs = [load_run(Path(d)) for d in run_dirs]
    check_same_stream(runs)
    rows = [summary(r) for r in runs]
    points = [
        {"name": r["name"], "fm": r["metrics"]["FM"], "new": r["new"]}
        for r in rows
        if r["metrics"].get("FM") is not None and r["new"] is not None
    ]
    result: Optional[dict] = None
    note = ""
    missing = [r["dir"] for r in runs if not r["per_example"]]
    if missing:
        note = f"{missing[0]} has no per-example statistics (per_example.json): no paired differences"
    else:
        result = paired(runs, reference, **options)
    html = (
        environment()
        .get_template("compare.html.j2")
        .render(
            rows=rows,
            metrics_order=METRICS,
            scatter=plots.tradeoff(points) if points else None,
            paired=result,
            paired_note=note,
            forest=forest(result) if result else None,
        )
    )
    atomic_write_text(Path(out), html)
    return Path(out), rows, result, note
