"""Editing protocols: how a list of requests is applied and measured.

- `sequential` (lifelong editing): requests are applied one group after another to the same model and all
  past edits are re-scored every `every` edits (the retention curve); the final metrics are of the model
  after the last edit.
- `rollback` (the T=1 style of the ROME and MEMIT papers): each group is applied to the unedited model,
  scored, and undone, so every edit is measured on its own.
Groups have `group` requests (1 for single edits; a batch for MEMIT-style mass editing).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal, Optional

import numpy as np

from lifelong.data.edit_requests import EditRequest
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.metrics import predictions, request_metrics, summarize
from lifelong.progress import progress as progress_bar


def _prompt_fn(results: list[EditResult]) -> Any:
    live = [r.prompt_fn for r in results if r.prompt_fn is not None and not r.undone]
    return live[-1] if live else None


def run_protocol(
    model: Any,
    tok: Any,
    editor: Editor,
    requests: list[EditRequest],
    mode: Literal["sequential", "rollback"] = "sequential",
    group: int = 1,
    every: Optional[int] = None,
    fluency_tokens: int = 0,
    bootstrap: int = 1000,
    seed: int = 0,
    progress: Optional[Callable[[int, int], None]] = None,
    quiet: bool = False,
    console: Optional[Any] = None,
) -> dict:
    """Apply `requests` with `editor` under a protocol; returns per-request metrics, their summary, the
    retention curve (sequential), timings and the EditResults (to undo, newest first). A bar over the
    requests advances per group (`lifelong.progress`; `quiet`: none); `progress(done, total)` is called too."""
    pre = predictions(model, tok, requests)
    groups = [list(range(i, min(i + group, len(requests)))) for i in range(0, len(requests), group)]
    results: list[EditResult] = []
    per: list[dict] = [{}] * len(requests)
    retention: list[dict] = []
    seconds: list[float] = []
    done = 0
    with progress_bar(len(requests), f"edit {editor.name} ({mode})", quiet, console, unit="requests") as bar:
        for g in groups:
            t0 = time.perf_counter()
            res = editor.edit(model, tok, [requests[i] for i in g])
            seconds.append(time.perf_counter() - t0)
            done += len(g)
            if mode == "rollback":
                scores = request_metrics(
                    model, tok, [requests[i] for i in g], [pre[i] for i in g], _prompt_fn([res]), fluency_tokens
                )
                for i, s in zip(g, scores):
                    per[i] = s
                res.undo(model)
            else:
                results.append(res)
                if every and (done % every < len(g) or done == len(requests)) and done < len(requests):
                    past = request_metrics(model, tok, requests[:done], pre[:done], _prompt_fn(results))
                    retention.append({"edits": done, **{k: v["mean"] for k, v in summarize(past, 0).items()}})
            bar.advance(len(g))
            if progress:
                progress(done, len(requests))
    if mode == "sequential":
        per = request_metrics(model, tok, requests, pre, _prompt_fn(results), fluency_tokens)
        retention.append({"edits": done, **{k: v["mean"] for k, v in summarize(per, 0).items()}})
    return {
        "method": editor.name,
        "mode": mode,
        "group": group,
        "requests": len(requests),
        "per_request": per,
        "summary": summarize(per, bootstrap, seed),
        "retention": retention,
        "seconds_per_group": float(np.mean(seconds)) if seconds else 0.0,
        "seconds_total": float(np.sum(seconds)),
        "results": results,
    }
