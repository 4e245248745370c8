"""Progress of the long phases outside training (evaluation, edits, merges, memory indexing, export).

On a terminal: a rich bar with the count, items/s and the time remaining. Not on a terminal (logs, CI,
piped output): one summary line per phase when it ends, e.g. `eval task0: 40 items in 3.2 s (12.5 items/s)`,
so logs stay readable. `quiet`: nothing at all. The training loop keeps its own bar (train/loop.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable, Optional, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second of a task (rich's smoothed `Task.speed`), in the phase's own unit."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")


class Bar:
    """What a phase sees: `advance(n)` as work finishes. `progress` and `task` are the live rich bar (None
    when not on a terminal or quiet); `completed` counts in every mode."""

    def __init__(self, total: int, progress: Optional[Progress] = None) -> None:
        self.total = total
        self.completed = 0
        self.progress = progress
        self.task = progress.add_task("", total=total) if progress is not None else None

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)


def summary_line(description: str, count: int, seconds: float, unit: str = "items") -> str:
    """The one line a phase prints when not on a terminal."""
    rate = f"{count / seconds:,.1f}" if seconds > 0 else "inf"
    return f"{description}: {count} {unit} in {seconds:.1f} s ({rate} {unit}/s)"


@contextmanager
def progress(
    total: int,
    description: str,
    quiet: bool = False,
    console: Optional[Console] = None,
    unit: str = "items",
) -> Iterator[Bar]:
    """A bar over `total` units of work named `description`; advance it with `bar.advance(n)`.

    Live on a terminal console (nested inside another live display, such as the training bar, it renders
    under it); otherwise one summary line at the end; nothing when `quiet`."""
    console = console if console is not None else Console()
    t0 = time.perf_counter()
    if quiet:
        yield Bar(total)
        return
    if not console.is_terminal:
        bar = Bar(total)
        yield bar
        console.print(summary_line(description, bar.completed, time.perf_counter() - t0, unit), highlight=False)
        return
    live = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    with live:
        bar = Bar(total, live)
        if bar.task is not None:
            live.update(bar.task, description=description)
        yield bar


def _size(item: dict) -> int:
    """Characters of an item's text fields: a proxy of its token length, to chunk items of similar length."""
    return sum(
        len(v) if isinstance(v, str) else sum(len(str(x)) for x in v) if isinstance(v, list) else 0
        for v in item.values()
    )


def scored_in_chunks(
    score: Callable[[list[dict]], tuple[Any, Optional[list[dict]]]],
    items: Sequence[dict],
    bar: Bar,
    chunk: int,
) -> tuple[Any, Optional[list[dict]]]:
    """`score(items)` (a scorer's `score_details` bound to an LM) run over chunks of `chunk` items, advancing
    `bar` after each, with the result of one call. Items are chunked longest first (the LM pads within a
    batch, so a chunk of similar lengths pads about as little as one call) and put back in order: statistics
    are per item, so each row goes back to its item's position (a scorer that leaves items out, such as
    `edit`, names each row's item by its record's `index`); records' `index` is mapped back likewise.
    A chunk the scorer refuses (ValueError: e.g. no item of the chunk has what an edit metric needs) makes
    the whole list be scored in one call, so errors and results are exactly those of one call."""
    import numpy as np

    if not items:
        return score([])
    chunk = max(1, chunk)
    order = sorted(range(len(items)), key=lambda i: -_size(items[i]))
    rows: list[Any] = []
    where: list[int] = []  # the item position of every statistics row
    records: Optional[list[dict]] = []
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        try:
            s, recs = score([items[i] for i in idx])
        except ValueError:
            whole = score(list(items))
            bar.advance(len(items) - start)
            return whole
        s = np.asarray(s)
        if len(s) == len(idx):
            where.extend(idx)
        elif recs is not None and len(recs) == len(s):
            where.extend(idx[r["index"]] for r in recs)
        else:  # rows that name no item: only one call keeps their meaning
            whole = score(list(items))
            bar.advance(len(items) - start)
            return whole
        rows.append(s)
        if recs is None:
            records = None
        elif records is not None:
            records.extend({**r, "index": idx[r["index"]]} for r in recs)
        bar.advance(len(idx))
    back = np.argsort(np.asarray(where), kind="stable")
    stats = np.concatenate(rows)[back]
    if records is not None:
        records.sort(key=lambda r: r["index"])
    return stats, records


def chunk_size(n: int, batch_size: int, batches: int = 4) -> int:
    """Items per scorer call when evaluation advances a bar: whole batches (`batches` of them: the LM sorts
    by length within a call, so smaller chunks pad more; bench/eval_progress_overhead.py) and at most about
    25 updates per task."""
    return max(batches * max(1, batch_size), -(-n // 25))
