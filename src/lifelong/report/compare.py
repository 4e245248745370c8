"""`compare.html` and a terminal table over several runs of the same stream: metrics side by side and the
stability-plasticity scatter (forgetting vs score on each stage's own task right after it) with the Pareto
front. Runs of different streams are refused, naming the first difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from lifelong.eval.metrics import METRICS
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


def build_compare(run_dirs: list[Path], out: Path) -> tuple[Path, list[dict]]:
    runs = [load_run(Path(d)) for d in run_dirs]
    check_same_stream(runs)
    rows = [summary(r) for r in runs]
    points = [
        {"name": r["name"], "fm": r["metrics"]["FM"], "new": r["new"]}
        for r in rows
        if r["metrics"].get("FM") is not None and r["new"] is not None
    ]
    html = (
        environment()
        .get_template("compare.html.j2")
        .render(rows=rows, metrics_order=METRICS, scatter=plots.tradeoff(points) if points else None)
    )
    atomic_write_text(Path(out), html)
    return Path(out), rows
