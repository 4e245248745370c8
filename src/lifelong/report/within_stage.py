"""The report's evaluation inside stages (continual evaluation, De Lange, van de Ven and Tuytelaars 2023,
"Continual evaluation for lifelong learning: identifying the stability gap", ICLR): the `eval_step` points of
a run as one series over the global optimizer step, the stage boundaries, and per stage the drop of every
older task between the boundary and its worst in-stage point (the stability gap) in numbers."""

from __future__ import annotations

from typing import Any, Optional


def inner_points(events: list[dict]) -> list[dict]:
    """The `eval_step` events in (stage, step) order, one per (stage, step): a resumed run that scored a point
    twice keeps the last."""
    last: dict[tuple[int, int], dict] = {}
    for e in events:
        if e.get("type") == "eval_step" and isinstance(e.get("scores"), dict):
            last[(int(e["stage"]), int(e["step"]))] = e
    return [last[k] for k in sorted(last)]


def boundaries(points: list[dict], events: list[dict]) -> list[tuple[int, str]]:
    """(global step, stage name) where each stage with in-stage points starts."""
    names = {e["stage"]: e.get("name", f"stage {e['stage']}") for e in events if e.get("type") == "stage_start"}
    out: dict[int, tuple[int, str]] = {}
    for p in points:
        start = int(p["global_step"]) - int(p["step"])
        out.setdefault(p["stage"], (start, names.get(p["stage"], f"stage {p['stage']}")))
    return [out[k] for k in sorted(out)]


def gap_rows(points: list[dict], tasks: list[dict], stage_names: list[str]) -> list[dict[str, Any]]:
    """Per stage and per task older than it (an earlier stage's task, or a probe): the score at the stage's
    first point (the boundary), the worst in-stage score in the task's direction and its step, the score at
    the stage's last point, and worst minus boundary (the gap: negative when a higher-is-better score drops,
    positive when a perplexity rises)."""
    rows: list[dict[str, Any]] = []
    for stage in sorted({p["stage"] for p in points}):
        pts = [p for p in points if p["stage"] == stage]
        for t in tasks:
            if t.get("stage") is not None and t["stage"] >= stage:
                continue
            series = [(p["step"], p["scores"][t["name"]]) for p in pts if p["scores"].get(t["name"]) is not None]
            if not series:
                continue
            pick = min if t["higher_is_better"] else max
            worst_step, worst = pick(series, key=lambda sv: sv[1])
            first: Optional[float] = series[0][1] if series[0][0] == 0 else None
            rows.append(
                {
                    "stage": stage_names[stage] if stage < len(stage_names) else f"stage {stage}",
                    "task": t["name"],
                    "metric": t["metric"],
                    "higher_is_better": t["higher_is_better"],
                    "boundary": first,
                    "worst": worst,
                    "worst_step": worst_step,
                    "end": series[-1][1],
                    "gap": None if first is None else worst - first,
                }
            )
    return rows
