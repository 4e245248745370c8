"""The causal-tracing page (`lifelong trace ... --out DIR` writes `report.html` next to `trace.json`): one
heatmap per kind as ROME's figure 2 (rows: position groups, columns: layers, colour: the average indirect
effect on P(o), from 0), the picked layer marked, and the facts used and skipped. Self-contained (styles
and SVG inline)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from lifelong.fileio import atomic_write_text
from lifelong.report.plots import _plt, _svg

CMAPS = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}
TITLES = {
    "hidden": "single restored hidden state h_i^(l)",
    "mlp": "MLP outputs restored over a window",
    "attn": "attention outputs restored over a window",
}


def trace_heatmap(kind: str, res: dict, groups: list[str], vmax: float) -> str:
    """One kind's average indirect effects as a heatmap (groups x layers); the picked layer is boxed at
    the last subject token. Groups no fact has are left blank."""
    plt = _plt()
    M = np.array([[np.nan] * len(_row(res)) if r is None else r for r in res["indirect_effect"]], dtype=float)
    L = M.shape[1]
    fig, ax = plt.subplots(figsize=(min(1.5 + 0.28 * L, 13), 2.6))
    im = ax.imshow(np.ma.masked_invalid(M), cmap=CMAPS.get(kind, "viridis"), vmin=0, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(groups)), groups, fontsize=8)
    step = 1 if L <= 16 else 5
    ax.set_xticks(range(0, L, step), [str(i) for i in range(0, L, step)], fontsize=8)
    window = res.get("window", 1)
    ax.set_xlabel(
        "restored layer" if kind == "hidden" or window == 1 else f"centre of the {window} restored layers", fontsize=8
    )
    picked = res.get("picked_layer")
    if picked is not None:
        row = groups.index("last subject token")
        ax.add_patch(plt.Rectangle((picked - 0.5, row - 0.5), 1, 1, fill=False, ec="black", lw=2))
    ax.set_title(
        f"{kind}: average indirect effect of the {TITLES.get(kind, kind)} on P(o), {res['facts_used']} facts "
        f"(total effect {res['total_effect']:.3f})",
        fontsize=9,
    )
    cb = fig.colorbar(im, ax=ax, fraction=0.03)
    cb.ax.tick_params(labelsize=7)
    return _svg(fig)


def _row(res: dict) -> list:
    return next(r for r in res["indirect_effect"] if r is not None)


def trace_page(data: dict) -> str:
    """The HTML page of one trace.json."""
    groups = data["groups"]
    kinds = data["kinds"]
    peak = max((max(v for r in k["indirect_effect"] if r is not None for v in r) for k in kinds.values()), default=0)
    vmax = max(float(peak), 1e-6)
    css = (Path(__file__).parent / "templates" / "base.css").read_text()
    e = html.escape
    s = data.get("settings", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Causal trace: {e(str(data.get('model', '')))}</title><style>{css}</style></head><body>",
        f"<header><h1>Causal trace of {e(str(data.get('model', 'a model')))}</h1>",
        f"<p>{e(str(data.get('facts_file', 'shipped common facts')))} · {s.get('samples')} noise samples · "
        f"noise {s.get('noise')} × embedding std ({data.get('noise_std', 0):.4f}) · window {s.get('window')} · "
        f"seed {s.get('seed')}</p></header><main>",
        "<section><h2>Picked layers</h2><p>The layer where the average indirect effect at the last subject "
        "token peaks (boxed in each figure); the MLP one is ROME's layer to edit.</p><table>"
        "<tr><th>kind</th><th>picked layer</th><th>peak effect</th><th>P(o) clean</th><th>P(o) corrupted</th>"
        "<th>total effect</th><th>facts used</th><th>skipped</th></tr>",
    ]
    for k, r in kinds.items():
        last = r["indirect_effect"][groups.index("last subject token")]
        pk = "—" if r["picked_layer"] is None or last is None else f"{last[r['picked_layer']]:.3f}"
        parts.append(
            f"<tr><td>{e(k)}</td><td>{r['picked_layer']}</td><td>{pk}</td><td>{r['p_clean']:.3f}</td>"
            f"<td>{r['p_corrupted']:.3f}</td><td>{r['total_effect']:.3f}</td><td>{r['facts_used']}</td>"
            f"<td>{len(r['facts_skipped'])}</td></tr>"
        )
    parts.append("</table></section>")
    for k, r in kinds.items():
        parts.append(f"<section><h2>{e(k)}</h2><div class='fig'>{trace_heatmap(k, r, groups, vmax)}</div>")
        parts.append(
            "<p class='note'>Indirect effect = P(o) with the state restored minus P(o) corrupted, averaged over "
            f"facts and the tokens of each group (tokens pooled per group: {', '.join(map(str, r['counts']))}). "
            "Blank rows: no fact has a token there.</p></section>"
        )
    first = next(iter(kinds.values()))
    parts.append(
        "<section><h2>Facts</h2><table><tr><th>prompt</th><th>object</th><th>P clean</th><th>P corrupted</th></tr>"
    )
    for f in first["per_fact"]:
        parts.append(
            f"<tr><td class='text'>{e(f['text'])}</td><td>{e(f['target'])}</td><td>{f['p_clean']:.3f}</td>"
            f"<td>{f['p_corrupted']:.3f}</td></tr>"
        )
    parts.append("</table>")
    if first["facts_skipped"]:
        parts.append(
            "<p>Skipped (the model does not produce the object greedily, so there is nothing to trace):</p>"
            "<table><tr><th>where</th><th>prompt</th><th>object</th><th>model predicts</th></tr>"
        )
        for d in first["facts_skipped"]:
            parts.append(
                f"<tr><td>{e(str(d['where']))}</td><td class='text'>{e(d['text'])}</td><td>{e(d['target'])}</td>"
                f"<td>{e(repr(d['predicted']))}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section></main></body></html>")
    return "".join(parts)


def write_trace_report(trace_json: Path, out: Path | None = None) -> Path:
    """Write `report.html` beside `trace.json` (or at `out`)."""
    data: dict[str, Any] = json.loads(Path(trace_json).read_text())
    dest = Path(out) if out is not None else Path(trace_json).with_name("report.html")
    atomic_write_text(dest, trace_page(data))
    return dest
