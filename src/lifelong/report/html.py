"""`report.html`: one self-contained page per run (styles and SVG figures inline, no network needed), rendered
from a Jinja2 template: the results matrix as an accessible HTML table (cells coloured within their column,
text contrast >= 4.5:1 by WCAG relative luminance, CIs in tooltips and for screen readers, each cell linked to
its items in `examples/`) beside the heatmap figure, per-task
curves with CI bands, scores inside stages (the stability gap), the metrics with CIs and their convention,
training loss and learning rate with stage boundaries, the cost table, the resolved config and the
environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lifelong.eval.metrics import METRICS
from lifelong.fileio import atomic_write_text
from lifelong.report import plots
from lifelong.report.table import group_title, read_events
from lifelong.report.within_stage import boundaries, gap_rows, inner_points

TEMPLATES = Path(__file__).parent / "templates"


def environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]))
    env.filters["num"] = lambda v, d=2: "—" if v is None else f"{v:,.{d}f}"
    env.filters["item_text"] = lambda v: (
        "—" if v is None else " | ".join(map(str, v)) if isinstance(v, list) else str(v)
    )
    return env


def cell_bands(res: dict, per_example: dict, n_boot: int = 500, seed: int = 0) -> dict[str, list]:
    """95% percentile-bootstrap CI of every cell (resampling that task's eval examples)."""
    from lifelong.eval.scorers import SCORERS

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for t in res["tasks"]:
        agg = SCORERS.get(t["scorer"]).aggregate
        band: list[Optional[list[float]]] = []
        for row in res["rows"]:
            stats = per_example.get(t["name"], {}).get(row)
            if not stats:
                band.append(None)
                continue
            s = np.asarray(stats, dtype=float)
            idx = rng.integers(len(s), size=(n_boot, len(s)))
            draws = agg(s[idx])
            band.append([float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))])
        out[t["name"]] = band
    return out


def _luminance(rgb: tuple[int, int, int]) -> float:
    """WCAG 2.x relative luminance of an sRGB colour (0-255 channels)."""
    lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two colours, 1 to 21 (WCAG 2.1, success criterion 1.4.3 asks >= 4.5 for text)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def hex_rgb(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


_SCALE = ((215, 48, 39), (255, 255, 191), (26, 152, 80))  # bad, middle, good (ColorBrewer RdYlGn ends)
_EMPTY = "#f0f2f5"


def cell_colour(x: float) -> str:
    """Background of a cell at position x in [0, 1] of its column's range (1 = best in the column's direction)."""
    x = min(max(x, 0.0), 1.0)
    a, b, t = (_SCALE[0], _SCALE[1], 2 * x) if x < 0.5 else (_SCALE[1], _SCALE[2], 2 * x - 1)
    return "#{:02x}{:02x}{:02x}".format(*(round(u + (v - u) * t) for u, v in zip(a, b)))


def text_colour(bg: str) -> str:
    """Black or white, whichever contrasts more with `bg` (never below 4.58:1, the worst case of the better one)."""
    rgb = hex_rgb(bg)
    return "#000000" if contrast(rgb, (0, 0, 0)) >= contrast(rgb, (255, 255, 255)) else "#ffffff"


def matrix_cells(
    res: dict, bands: dict[str, list], per_example: dict, items: dict[tuple[int, int], dict]
) -> list[list[dict]]:
    """The results matrix as table cells `[row][task]`: value, background and text colour (the background
    by the cell's place in its column's range, in the column's direction), 95% CI, the link to its items,
    and for `choice` tasks the other accuracy (acc vs acc_norm, statistics column 1)."""
    out: list[list[dict]] = []
    cols = []
    for j in range(len(res["tasks"])):
        vals = [r[j] for r in res["matrix"] if r[j] is not None]
        cols.append((min(vals), max(vals)) if vals else (0.0, 0.0))
    for r, row in enumerate(res["rows"]):
        line = []
        for j, t in enumerate(res["tasks"]):
            v = res["matrix"][r][j]
            lo, hi = cols[j]
            if v is None:
                bg = _EMPTY
            else:
                x = (v - lo) / (hi - lo) if hi > lo else 0.5
                bg = cell_colour(x if t["higher_is_better"] else 1 - x)
            band = (bands.get(t["name"]) or [None] * len(res["rows"]))[r]
            stats = per_example.get(t["name"], {}).get(row)
            alt = None
            if t.get("scorer") == "choice" and stats and len(stats[0]) > 1:
                c = items.get((r, j))
                used = (c["items"][0].get("length_norm", "none") if c and c["items"] else "none") or "none"
                alt = ("acc_norm" if used == "none" else "acc", 100.0 * float(np.mean([s[1] for s in stats])))
            line.append(
                {"value": v, "bg": bg, "fg": text_colour(bg), "ci": band, "link": items.get((r, j)), "alt": alt}
            )
        out.append(line)
    return out


ITEMS_PER_CELL = 200
"""Items of a cell listed in the report (all of them stay in `examples/<task>/<row>.jsonl`)."""


def cell_items(run_dir: Path, res: dict, limit: int = ITEMS_PER_CELL) -> dict[tuple[int, int], dict]:
    """The per-item records behind each scored cell (row r, task j) that has them, for the report's linked
    matrix: `{(r, j): {anchor, task, row, value, n, items (first `limit`), path}}`. Runs made before
    per-item records have none, and the report says so."""
    from lifelong.eval.results import examples_path, read_examples

    out: dict[tuple[int, int], dict] = {}
    for j, t in enumerate(res["tasks"]):
        for r, row in enumerate(res["rows"]):
            path = examples_path(run_dir, t["name"], row)
            if res["matrix"][r][j] is None or not path.is_file():
                continue
            recs = read_examples(run_dir, t["name"], row)
            out[(r, j)] = {
                "anchor": f"cell-{r}-{j}",
                "task": t["name"],
                "row": row,
                "value": res["matrix"][r][j],
                "n": len(recs),
                "items": recs[:limit],
                "path": path.relative_to(run_dir).as_posix(),
            }
    return out


def load_run(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    rp = run_dir / "results.json"
    if not rp.exists():
        raise ValueError(f"{run_dir}: no results.json; is this a run directory (lifelong run ... writes one)?")
    res = json.loads(rp.read_text())
    pe = run_dir / "per_example.json"
    per = json.loads(pe.read_text()) if pe.exists() else {}
    cfg = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else ""
    return {"dir": run_dir, "results": res, "per_example": per, "config": cfg, "events": read_events(run_dir)}


def training_series(events: list[dict]) -> tuple[list[dict], list[tuple[int, str]]]:
    steps = [e for e in events if e.get("type") == "step"]
    # a resumed run logs some steps twice: keep the last record of each (stage, step)
    last: dict[tuple, dict] = {}
    for e in steps:
        last[(e["stage"], e["step"])] = e
    ordered = [last[k] for k in sorted(last)]
    bounds, seen = [], set()
    names = {e["stage"]: e.get("name", f"stage {e['stage']}") for e in events if e.get("type") == "stage_start"}
    for i, e in enumerate(ordered):
        if e["stage"] not in seen:
            seen.add(e["stage"])
            bounds.append((i, names.get(e["stage"], f"stage {e['stage']}")))
    return ordered, bounds


def build_report(run_dir: Path, out: Optional[Path] = None) -> Path:
    run = load_run(run_dir)
    res = run["results"]
    steps, bounds = training_series(run["events"])
    inner = inner_points(run["events"])
    bands = cell_bands(res, run["per_example"])
    cells = cell_items(Path(run_dir), res)  # train.eval_every: scores inside stages
    groups = [  # titled with their tasks, the unit of their metrics and the direction of the score
        (group_title(g, v), v) for g, v in res.get("metrics", {}).items() if isinstance(v, dict) and "metrics" in v
    ]
    costs = [{"stage": k, **v} for k, v in res.get("costs", {}).items()]
    cost_keys = sorted(
        {k for c in costs for k in c if k != "stage"},
        key=lambda k: (k not in ("wall_s", "steps", "tokens", "trainable_params", "peak_memory_mb"), k),
    )
    html = (
        environment()
        .get_template("report.html.j2")
        .render(
            res=res,
            metrics_order=METRICS,
            groups=groups,
            costs=costs,
            cost_keys=cost_keys,
            heatmap=plots.heatmap(res["rows"], res["tasks"], res["matrix"]),
            cells=cells,
            table=matrix_cells(res, bands, run["per_example"], cells),
            curves=plots.curves(res["rows"], res["tasks"], res["matrix"], bands),
            training=plots.training(steps, bounds) if steps else None,
            within=plots.within_stage(inner, res["tasks"], boundaries(inner, run["events"])) if inner else None,
            gaps=gap_rows(inner, res["tasks"], res["rows"][1:]),
            config=run["config"],
            versions=res.get("versions", {}),
            probes=res.get("metrics", {}).get("probes"),
            tax=res.get("metrics", {}).get("alignment_tax"),
            sweeps={  # preference stage -> (points with CIs, their figure)
                stage: (pts, plots.averaging_sweep(pts, res["tasks"]))
                for stage, pts in (res.get("averaging_sweep") or {}).items()
                if pts
            },
            convention=res.get("metrics", {}).get("convention", ""),
            complete=all(v is not None for v in res["matrix"][-1]),
        )
    )
    path = Path(out) if out else Path(run_dir) / "report.html"
    atomic_write_text(path, html)
    return path
