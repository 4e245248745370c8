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


def scored_in_chunks(
    score: Callable[[list[dict]], tuple[Any, Optional[list[dict]]]],
    items: Sequence[dict],
    bar: Bar,
    chunk: int,
) -> tuple[Any, Optional[list[dict]]]:
    """`score(items)` (a scorer's `score_details` bound to an LM) run over consecutive chunks of `chunk` items,
    advancing `bar` after each: statistics are per item, so the rows concatenate to those of one call; the
    records' `index` (position in the list scored) is shifted by the chunk's offset. Records are None when
    the scorer gives none."""
    import numpy as np

    chunk = max(1, chunk)
    stats: list[Any] = []
    records: Optional[list[dict]] = []
    for start in range(0, len(items), chunk):
        part = list(items[start : start + chunk])
        s, recs = score(part)
        stats.append(np.asarray(s))
        if recs is None:
            records = None
        elif records is not None:
            records.extend({**r, "index": r["index"] + start} if "index" in r else r for r in recs)
        bar.advance(len(part))
    if not stats:
        return score([])
    return np.concatenate(stats), records


def chunk_size(n: int, batch_size: int) -> int:
    """Items per scorer call when evaluation advances a bar: whole batches (4 of them, so few batches run
    part-full) and at most about 25 updates per task."""
    return max(4 * max(1, batch_size), -(-n // 25))
