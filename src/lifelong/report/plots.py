"""Figures of the run report, drawn with matplotlib (Agg) and returned as inline SVG text."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(
        buf, format="svg", bbox_inches="tight", metadata={"Creator": None, "Date": None, "Format": None, "Type": None}
    )
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog so it inlines in HTML


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(rows: list[str], tasks: list[dict], matrix: list[list[Optional[float]]]) -> str:
    """Results matrix as an annotated heatmap; colours per column, green = good in the column's direction."""
    plt = _plt()
    M = np.array([[np.nan if v is None else v for v in r] for r in matrix], dtype=float)
    C = np.full_like(M, np.nan)
    for j, t in enumerate(tasks):
        col = M[:, j]
        if t["metric"] in ("accuracy", "exact_match", "preference_accuracy"):  # percent: one absolute scale
            norm = col / 100.0
        else:  # other units (perplexity): scaled within the column
            lo, hi = np.nanmin(col), np.nanmax(col)
            norm = (col - lo) / (hi - lo) if hi > lo else np.full_like(col, 0.5)
        C[:, j] = norm if t["higher_is_better"] else 1 - norm
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(tasks), 0.9 + 0.5 * len(rows)))
    ax.imshow(np.ma.masked_invalid(C), cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            ax.text(j, i, "—" if np.isnan(M[i, j]) else f"{M[i, j]:.1f}", ha="center", va="center", fontsize=9)
    ax.set_xticks(
        range(len(tasks)),
        [f"{t['name']}\n{t['metric']} {'↑' if t['higher_is_better'] else '↓'}" for t in tasks],
        fontsize=8,
    )
    ax.set_yticks(range(len(rows)), ["baseline" if r == "baseline" else f"after {r}" for r in rows], fontsize=8)
    ax.axhline(0.5, color="black", lw=1.5)  # baseline row above the line
    ax.set_title("results matrix (green = better; percent scores on one 0-100 scale)", fontsize=9)
    return _svg(fig)


def curves(
    rows: list[str],
    tasks: list[dict],
    matrix: list[list[Optional[float]]],
    bands: dict[str, list[Optional[list[float]]]],
) -> str:
    """Each task's score after every stage with its 95% CI band; perplexity tasks on their own axes."""
    plt = _plt()
    groups = [g for g in (True, False) if any(t["higher_is_better"] == g for t in tasks)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 3.4), squeeze=False)
    x = np.arange(len(rows))
    for ax, g in zip(axes[0], groups):
        for j, t in enumerate(tasks):
            if t["higher_is_better"] != g:
                continue
            y = np.array([np.nan if r[j] is None else r[j] for r in matrix], dtype=float)
            (line,) = ax.plot(x, y, marker="o", label=t["name"])
            b = bands.get(t["name"], [])
            lo = np.array([np.nan if c is None else c[0] for c in b], dtype=float)
            hi = np.array([np.nan if c is None else c[1] for c in b], dtype=float)
            if len(lo) == len(x):
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
            if t.get("stage") is not None:
                ax.axvline(t["stage"] + 1, color=line.get_color(), ls=":", lw=0.8)
        ax.set_xticks(x, rows, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("score (higher is better)" if g else "perplexity (lower is better)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(
        "score of each task after every stage (band: 95% bootstrap CI; dotted: the task's own stage)", fontsize=9
    )
    return _svg(fig)


def training(steps: list[dict], boundaries: list[tuple[int, str]]) -> str:
    """Training loss and learning rate over global steps, stage boundaries marked."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True)
    xs = np.arange(len(steps))
    a1.plot(xs, [s["loss"] for s in steps], lw=1)
    a1.set_ylabel("loss")
    a2.plot(xs, [s["lr"] for s in steps], lw=1, color="tab:orange")
    a2.set_ylabel("learning rate")
    a2.set_xlabel("optimizer step (whole run)")
    for ax in (a1, a2):
        for x, _name in boundaries:
            ax.axvline(x, color="gray", ls="--", lw=0.8)
        ax.grid(alpha=0.3)
    for x, name in boundaries:
        a1.text(x, a1.get_ylim()[1], f" {name}", fontsize=7, va="top")
    return _svg(fig)


def within_stage(points: list[dict], tasks: list[dict], boundaries: list[tuple[int, str]]) -> str:
    """Each task's in-stage score (`eval_step` points) against the global optimizer step, stage boundaries
    marked: an old task's dip right after a boundary is the stability gap. Perplexity-like tasks on their own
    axes (log scale when they span more than a factor of 10). Task j's line has the SVG id `within-<j>`."""
    plt = _plt()
    groups = [g for g in (True, False) if any(t["higher_is_better"] == g for t in tasks)]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 3.6), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for j, t in enumerate(tasks):
            if t["higher_is_better"] != g:
                continue
            xy = [(p["global_step"], p["scores"][t["name"]]) for p in points if p["scores"].get(t["name"]) is not None]
            if xy:
                ax.plot(*zip(*xy), marker=".", ms=4, lw=1, label=t["name"], gid=f"within-{j}")
        values = [v for p in points for t in tasks if t["higher_is_better"] == g for v in [p["scores"].get(t["name"])]]
        values = [v for v in values if v is not None]
        if not g and values and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")
        for x, name in boundaries:
            ax.axvline(x, color="gray", ls="--", lw=0.8)
            ax.text(x, 1, f" {name}", fontsize=7, va="top", transform=ax.get_xaxis_transform())
        ax.set_xlabel("optimizer step (whole run)")
        units = " / ".join(dict.fromkeys(t["metric"] for t in tasks if t["higher_is_better"] == g))
        ax.set_ylabel(f"{units} ({'higher' if g else 'lower'} is better)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("scores inside stages (train.eval_every; dashed: stage starts)", fontsize=9)
    return _svg(fig)


def tradeoff(points: list[dict]) -> str:
    """Stability-plasticity scatter: forgetting (x, lower is better) vs score on new stages (y), with the
    Pareto front of runs no other run beats on both."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    front = [
        p
        for p in points
        if not any(
            q["fm"] <= p["fm"] and q["new"] >= p["new"] and (q["fm"] < p["fm"] or q["new"] > p["new"]) for q in points
        )
    ]
    for p in points:
        on = p in front
        ax.scatter(p["fm"], p["new"], s=60 if on else 35, color="tab:red" if on else "tab:blue", zorder=3)
        ax.annotate(p["name"], (p["fm"], p["new"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    f = sorted(front, key=lambda p: p["fm"])
    ax.plot([p["fm"] for p in f], [p["new"] for p in f], color="tab:red", lw=1, label="Pareto front")
    ax.set_xlabel("forgetting FM (lower is better)")
    ax.set_ylabel("average score on each stage's own task right after it")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


def averaging_sweep(points: list[dict], tasks: list[dict]) -> str:
    """One preference stage's averaging sweep: each task's score against the ratio a (weight of the aligned
    model; a = 0 is the model before the stage), with its 95% bootstrap CI as error bars; lower-is-better
    tasks on their own axes."""
    plt = _plt()
    hib = {t["name"]: t["higher_is_better"] for t in tasks}
    names = list(points[0]["scores"]) if points else []
    groups = [g for g in (True, False) if any(hib.get(n, True) == g for n in names)]
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(5.5 * max(len(groups), 1), 3.2), squeeze=False)
    x = np.array([p["ratio"] for p in points], dtype=float)
    for ax, g in zip(axes[0], groups):
        for n in names:
            if hib.get(n, True) != g:
                continue
            y = np.array([p["scores"][n] for p in points], dtype=float)
            cis = [(p.get("ci95") or {}).get(n) for p in points]
            err = np.array([[y[i] - c[0], c[1] - y[i]] if c else [0.0, 0.0] for i, c in enumerate(cis)]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=n)
        ax.set_xlabel("a: weight of the aligned model (0 = before the stage, 1 = after)")
        ax.set_ylabel("score (higher is better)" if g else "score (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("model averaging sweep (error bars: 95% bootstrap CI over eval examples)", fontsize=9)
    return _svg(fig)
