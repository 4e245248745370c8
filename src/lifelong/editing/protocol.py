"""Editing protocols: how a list of requests is applied and measured.

- `sequential` (lifelong editing): requests are applied one group after another to the same model. Each
  group is scored right after its edit (its immediate efficacy / generalization / locality), all past edits
  are re-scored every `every` edits (the retention curve), and the final metrics are of the model after the
  last edit.
- `rollback` (the T=1 style of the ROME and MEMIT papers): each group is applied to the unedited model,
  scored, and undone, so every edit is measured on its own.
Groups have `group` requests (1 for single edits; a batch for MEMIT-style mass editing).

A run can be continued: `ProtocolState` is where it stands after its last finished group (requests done,
rows of the finished requests, timings, the retention curve, the cumulative weight deltas); `on_group` is
called after every group with the state and the group's rows, so a caller can write them down (`lifelong
edit` appends the rows to `per_request.jsonl` and saves the state), and a later call with `state=` continues
from there with the same results as one uninterrupted call.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from rich.markup import escape

from lifelong.data.edit_requests import EditRequest
from lifelong.editing.base import Editor, EditResult
from lifelong.editing.metrics import predictions, request_metrics, summarize
from lifelong.progress import Bar
from lifelong.progress import progress as progress_bar


@dataclass
class ProtocolState:
    """Where a protocol run stands after its last finished group."""

    done: int = 0
    """Requests finished (the next group starts here)."""
    rows: list[dict] = field(default_factory=list)
    """One row per finished request, in order: `index`, `id`, `subject`, `target_new`, its scores (rollback:
    the edit alone; sequential: right after its own edit) and its convergence (`converged`, `loss`,
    `threshold`, `what`; None when the editor records none)."""
    seconds: list[float] = field(default_factory=list)
    """Seconds of each finished editor call."""
    retention: list[dict] = field(default_factory=list)
    """Sequential with `every`: mean scores of all edits so far, every `every` edits."""
    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    """Sequential: the sum of every finished group's exact weight update per parameter (in edit order)."""


ROW_FIELDS = ("index", "id", "subject", "target_new", "converged", "loss", "threshold", "what")
"""What a row holds besides its scores."""


def _prompt_fn(results: list[EditResult]) -> Any:
    live = [r.prompt_fn for r in results if r.prompt_fn is not None and not r.undone]
    return live[-1] if live else None


def request_label(row: dict) -> str:
    """How a warning names a request: its id, else its subject."""
    return f"{row['id']!r}" if row.get("id") is not None else f"subject {row['subject']!r}"


def not_converged_message(row: dict) -> str:
    return (
        f"warning: edit {row['index'] + 1} ({request_label(row)}) did not converge: final {row.get('what') or 'loss'} "
        f"{row['loss']:.4g} > threshold {row['threshold']:.4g}; the edit may not hold (more steps or a larger "
        "learning rate / norm bound may help)"
    )


def _convergence(res: EditResult, reqs: list[EditRequest]) -> list[Optional[dict]]:
    """The editor's convergence record of each request of a group (None where it recorded none)."""
    recs = list(res.info.get("convergence", []))
    out: list[Optional[dict]] = []
    for r in reqs:
        hit = next((c for c in recs if c.get("id") == r.id and c.get("subject") == r.subject), None)
        if hit is not None:
            recs.remove(hit)
        out.append(hit)
    return out


def running_description(name: str, mode: str, rows: list[dict]) -> str:
    """The bar's text: method, protocol, the running efficacy of the finished edits, edits not converged."""
    text = f"edit {name} ({mode})"
    if not rows:
        return text
    variant = "cf_prob" if all(r.get("efficacy[cf_prob]") is not None for r in rows) else "top1"
    vals = [r[f"efficacy[{variant}]"] for r in rows if r.get(f"efficacy[{variant}]") is not None]
    if vals:
        text += f" · efficacy[{variant}] {np.mean(vals):.1f}"
    bad = sum(1 for r in rows if r.get("converged") is False)
    return text + f" · not converged {bad}"


def _say(bar: Bar, console: Optional[Any], quiet: bool, message: str) -> None:
    """A warning line: above a live bar, else on the given console, else on stderr (also when quiet)."""
    if bar.progress is not None:
        bar.progress.console.print(message, markup=False, highlight=False)
    elif console is not None and not quiet:
        console.print(message, markup=False, highlight=False)
    else:
        print(message, file=sys.stderr)


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
    pre: Optional[list] = None,
    state: Optional[ProtocolState] = None,
    on_group: Optional[Callable[[ProtocolState, list[dict], EditResult], None]] = None,
    keep_results: bool = True,
) -> dict:
    """Apply `requests` with `editor` under a protocol; returns per-request metrics, their summary, the
    retention curve (sequential), the rows of every request (scores as each group finished, convergence),
    the edits that did not converge, timings, the summed deltas (sequential) and the EditResults (to undo,
    newest first; only the ones of this call, none without `keep_results`).

    A bar over the requests advances per group with the running efficacy and the count of edits that did
    not converge in its text (`lifelong.progress`; `quiet`: no bar); a warning naming the request, its final
    loss and the threshold is printed for every edit that did not converge. `progress(done, total)` is
    called after each group, `on_group(state, rows, result)` too. `pre`: the pre-edit predictions (computed
    here when not given); `state`: continue an earlier run from where it stopped."""
    if pre is None:
        with torch.no_grad():
            pre = predictions(model, tok, requests)
    st = state if state is not None else ProtocolState()
    if st.done % group and st.done < len(requests):
        raise ValueError(f"cannot continue at request {st.done}: not a multiple of the group size {group}")
    starts = range(st.done, len(requests), group)
    groups = [list(range(i, min(i + group, len(requests)))) for i in starts]
    results: list[EditResult] = []
    live_prompt: Any = None
    with progress_bar(len(requests), f"edit {editor.name} ({mode})", quiet, console, unit="requests") as bar:

        def describe() -> None:
            if bar.progress is not None and bar.task is not None:
                text = running_description(editor.name, mode, st.rows)
                bar.progress.update(bar.task, description=escape(text))  # the bar's column reads rich markup

        if st.done:
            bar.advance(st.done)
            describe()
        for g in groups:
            reqs = [requests[i] for i in g]
            t0 = time.perf_counter()
            res = editor.edit(model, tok, reqs)
            st.seconds.append(time.perf_counter() - t0)
            if mode == "rollback":
                with torch.no_grad():
                    scores = request_metrics(model, tok, reqs, [pre[i] for i in g], _prompt_fn([res]), fluency_tokens)
                res.undo(model)
            else:
                live_prompt = res.prompt_fn if res.prompt_fn is not None else live_prompt
                with torch.no_grad():
                    scores = request_metrics(model, tok, reqs, [pre[i] for i in g], live_prompt)
                for name, d in res.deltas.items():
                    st.deltas[name] = st.deltas[name] + d if name in st.deltas else d.detach().clone()
                if keep_results:
                    results.append(res)
            rows = []
            for i, r, s, c in zip(g, reqs, scores, _convergence(res, reqs)):
                row: dict[str, Any] = {"index": i, "id": r.id, "subject": r.subject, "target_new": r.target_new}
                row.update(s)
                row.update(
                    converged=None if c is None else c["converged"],
                    loss=None if c is None else c["loss"],
                    threshold=None if c is None else c["threshold"],
                    what=None if c is None else c["what"],
                )
                rows.append(row)
            st.rows += rows
            st.done += len(g)
            for row in rows:
                if row["converged"] is False:
                    _say(bar, console, quiet, not_converged_message(row))
            if mode == "sequential" and every and (st.done % every < len(g)) and st.done < len(requests):
                with torch.no_grad():
                    past = request_metrics(model, tok, requests[: st.done], pre[: st.done], live_prompt)
                st.retention.append({"edits": st.done, **{k: v["mean"] for k, v in summarize(past, 0).items()}})
            bar.advance(len(g))
            describe()
            if on_group is not None:
                on_group(st, rows, res)
            if progress:
                progress(st.done, len(requests))
    immediate = [{k: v for k, v in row.items() if k not in ROW_FIELDS} for row in st.rows]
    if mode == "sequential":
        with torch.no_grad():
            per = request_metrics(model, tok, requests, pre, live_prompt, fluency_tokens)
        retention = st.retention + [{"edits": st.done, **{k: v["mean"] for k, v in summarize(per, 0).items()}}]
    else:
        per, retention = immediate, []
    bad = [
        {k: row[k] for k in ("index", "id", "subject", "loss", "threshold", "what")}
        for row in st.rows
        if row.get("converged") is False
    ]
    return {
        "method": editor.name,
        "mode": mode,
        "group": group,
        "requests": len(requests),
        "per_request": per,
        "summary": summarize(per, bootstrap, seed),
        "immediate": summarize(immediate, bootstrap, seed) if mode == "sequential" else None,
        "retention": retention,
        "rows": st.rows,
        "not_converged": bad,
        "convergence_recorded": sum(1 for row in st.rows if row.get("converged") is not None),
        "seconds_per_group": float(np.mean(st.seconds)) if st.seconds else 0.0,
        "seconds_total": float(np.sum(st.seconds)),
        "deltas": st.deltas,
        "results": results,
    }
