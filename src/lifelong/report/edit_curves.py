"""`report.html` of a sequential-editing benchmark (`lifelong edit-bench`): the curves of `curves.json` per
method, drawn with the run report's figure helpers (matplotlib, inline SVG), and a table of the last point.

Figures: for each metric variant, efficacy / generalization / locality of all edits so far (solid) and of
the most recent window (dashed) against the number of edits, one colour per method; general ability
(perplexity of the held-out text, accuracy of known facts) with the unedited model at 0 edits."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

from lifelong.fileio import atomic_write_text
from lifelong.report.plots import _plt, _svg

METRICS = ("efficacy", "generalization", "locality")
GENERAL = (
    ("perplexity", "perplexity of the held-out text (lower is better)"),
    ("known_facts[top1]", "known facts kept, top1 %"),
)


def _variants(curves: dict) -> list[str]:
    found = {
        k.split("[", 1)[1].rstrip("]")
        for e in curves["methods"].values()
        for p in e.get("points", [])
        for k in p.get("all", {})
        if "[" in k and not k.startswith("score")
    }
    return [v for v in ("cf_prob", "top1") if v in found]


def edit_figure(curves: dict, variant: str) -> str:
    """Efficacy, generalization, locality of all edits so far and of the recent window, per method."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.6 * len(METRICS), 3.3), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], METRICS):
        key = f"{metric}[{variant}]"
        for i, (name, e) in enumerate(curves["methods"].items()):
            pts = [p for p in e.get("points", []) if key in p.get("all", {})]
            if not pts:
                continue
            c = colours[i % len(colours)]
            x = [p["edits"] for p in pts]
            ax.plot(x, [p["all"][key] for p in pts], marker="o", ms=3, color=c, label=f"{name}: all edits so far")
            recent = [p.get("recent", {}).get(key) for p in pts]
            ax.plot(x, [float("nan") if v is None else v for v in recent], ls="--", color=c, label=f"{name}: recent")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("edits applied", fontsize=8)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("percent", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="best")
    window = curves.get("window")
    fig.suptitle(f"{variant}: solid = every edit so far, dashed = the last {window} edits", fontsize=9)
    return _svg(fig)


def general_figure(curves: dict) -> Optional[str]:
    """General ability against edits applied (the unedited model at 0), per method."""
    shown = [
        (k, label)
        for k, label in GENERAL
        if any(k in p.get("general", {}) for e in curves["methods"].values() for p in e.get("points", []))
    ]
    if not shown:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(shown), figsize=(4.8 * len(shown), 3.3), squeeze=False)
    for ax, (key, label) in zip(axes[0], shown):
        for name, e in curves["methods"].items():
            base = e.get("baseline", {}).get("general", {}).get(key)
            pts = [(p["edits"], p["general"][key]) for p in e.get("points", []) if key in p.get("general", {})]
            if base is not None:
                pts = [(0, base)] + pts
            if pts:
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, label=name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("edits applied", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("general ability (0 edits: the unedited model)", fontsize=9)
    return _svg(fig)


def _num(v: Any, d: int = 1) -> str:
    return "—" if v is None else f"{v:,.{d}f}"


def last_point_rows(curves: dict) -> list[list[str]]:
    """One row per method: its last point's scores, general ability before and after, edits not converged."""
    rows = []
    variants = _variants(curves)
    v = variants[0] if variants else "top1"
    for name, e in curves["methods"].items():
        pts = e.get("points", [])
        last = pts[-1] if pts else {}
        base = e.get("baseline", {}).get("general", {})
        gen = last.get("general", {})
        rows.append(
            [
                name,
                str(last.get("edits", 0)) + ("" if e.get("finished") else " (unfinished)"),
                *[_num(last.get("all", {}).get(f"{m}[{v}]")) for m in METRICS],
                _num(last.get("recent", {}).get(f"efficacy[{v}]")),
                f"{_num(base.get('perplexity'), 2)} → {_num(gen.get('perplexity'), 2)}",
                f"{_num(base.get('known_facts[top1]'))} → {_num(gen.get('known_facts[top1]'))}",
                str(last.get("not_converged", 0)),
                _num(last.get("seconds")),
            ]
        )
    return rows


def table_header(curves: dict) -> list[str]:
    variants = _variants(curves)
    v = variants[0] if variants else "top1"
    return [
        "method",
        "edits",
        *[f"{m}[{v}] (all)" for m in METRICS],
        f"efficacy[{v}] (recent)",
        "perplexity",
        "known facts %",
        "not converged",
        "edit s",
    ]


def markdown_table(curves: dict) -> str:
    head = table_header(curves)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in last_point_rows(curves)]
    return "\n".join(lines)


def render(curves: dict) -> str:
    """The whole page (styles and figures inline)."""
    esc = html.escape
    figures = [edit_figure(curves, v) for v in _variants(curves)]
    general = general_figure(curves)
    head = "".join(f"<th>{esc(h)}</th>" for h in table_header(curves))
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in last_point_rows(curves))
    params = "".join(
        f"<li><b>{esc(n)}</b>: <code>{esc(json.dumps(e.get('params', {})))}</code></li>"
        for n, e in curves["methods"].items()
    )
    facts = (
        f"{curves['requests']} requests from <code>{esc(str(curves['requests_file']))}</code> on "
        f"<code>{esc(str(curves['model']))}</code>, groups of {curves.get('group', 1)}, a point every "
        f"{curves['every']} edits; general ability: perplexity of "
        f"<code>{esc(str(curves.get('general') or '—'))}</code>, known facts of "
        f"<code>{esc(str(curves.get('known') or '—'))}</code>."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sequential editing</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#1a1a1a}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}figure{{margin:1.5em 0}}</style></head>
<body><h1>Sequential editing</h1><p>{facts}</p>
<h2>After the last edit</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Edits so far</h2>{"".join(f"<figure>{f}</figure>" for f in figures)}
{f"<h2>General ability</h2><figure>{general}</figure>" if general else ""}
<h2>Methods</h2><ul>{params}</ul>
</body></html>
"""


def write_report(out_dir: str | Path) -> Path:
    """Render `out_dir/curves.json` into `out_dir/report.html` (atomically); returns its path."""
    d = Path(out_dir)
    curves = json.loads((d / "curves.json").read_text(encoding="utf-8"))
    path = d / "report.html"
    atomic_write_text(path, render(curves))
    return path
