"""Fitting rows into a length limit, and the record of what that did.

Nothing is dropped silently: every function that fits rows (training examples, preference pairs, eval items)
returns what it kept together with a `Lengths` record (rows read, rows cut, rows dropped, where the first
one is); the stage logs it as a `data` event and in its costs, and `warn` names the first such row once
(docs/decisions.md, "Rows longer than max_length").

`data.truncate` decides what happens to a row longer than the limit:
- `left`: the context before the first token the loss (or the score) is taken on gives way from its start,
  after a leading BOS; whatever is still too long (a response longer than the limit on its own) loses its
  end. A prompt-response row keeps its whole response and loses the start of its prompt.
- `right`: the sequence loses its end (the response first, then the prompt).
- `drop`: the row is left out.
A row left with no token to learn from (or score) is dropped whatever the setting.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

if TYPE_CHECKING:
    from rich.console import Console

IGNORE = -100
"""Label of a token no loss is taken on."""


class TruncationWarning(UserWarning):
    """Rows or eval items were cut or dropped to fit a length limit (issued instead of a console line when a
    run is quiet, so library users can filter it or turn it into an error)."""


@dataclass
class Lengths:
    """What fitting rows into `max_length` did: `rows` read, `truncated` (kept, cut), `dropped` (left out), and
    `first`, where the first cut or dropped row came from (`file line N`)."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0
    first: Optional[str] = None
    max_length: Optional[int] = None
    truncate: str = "left"

    @property
    def kept(self) -> int:
        return self.rows - self.dropped

    def note(self, where: str, outcome: Optional[str]) -> None:
        """Count one row: `outcome` is None (fits), `truncated` or `dropped`."""
        self.rows += 1
        if outcome is None:
            return
        if outcome == "truncated":
            self.truncated += 1
        else:
            self.dropped += 1
        if self.first is None:
            self.first = where

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Lengths":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def merge(cls, records: Iterable["Lengths"]) -> "Lengths":
        """One record for several sources of a stage (the first affected row of the first source that has one)."""
        out = cls()
        for r in records:
            out.rows += r.rows
            out.truncated += r.truncated
            out.dropped += r.dropped
            out.first = out.first or r.first
            out.max_length, out.truncate = r.max_length, r.truncate
        return out

    def message(self, what: str, limit_name: str, setting: str) -> Optional[str]:
        """The warning for `what` (e.g. `stage 0 (news)`), naming the first affected row and the fix; None
        when nothing was cut or dropped. `limit_name` and `setting` name the options that change it."""
        if not (self.truncated or self.dropped):
            return None
        done = []
        if self.truncated:
            side = "the start of the prompt" if self.truncate == "left" else "the end"
            done.append(f"{self.truncated} cut ({side})")
        if self.dropped:
            done.append(f"{self.dropped} dropped")
        return (
            f"{what}: {self.truncated + self.dropped} of {self.rows} rows are longer than {limit_name}="
            f"{self.max_length} tokens: {' and '.join(done)} ({setting}: {self.truncate}); the first is "
            f"{self.first}. Raise {limit_name} or shorten the rows to keep them whole"
            + ("" if self.truncate != "drop" else f", or set {setting}: left to keep them cut")
        )


class Examples(list):  # type: ignore[type-arg]
    """Tokenized examples (a list of dicts, as before) that also carry the `Lengths` record of how they were
    fitted into `max_length`."""

    def __init__(self, items: Iterable[dict] = (), lengths: Optional[Lengths] = None) -> None:
        super().__init__(items)
        self.lengths = lengths if lengths is not None else Lengths(rows=len(self))


def _has_target(labels: list[int]) -> bool:
    return any(x != IGNORE for x in labels)


def fit_sequence(
    ids: list[int], labels: list[int], max_length: int, mode: str, bos: Optional[int] = None
) -> tuple[Optional[tuple[list[int], list[int]]], Optional[str]]:
    """One tokenized row fitted into `max_length` by `mode` (module docstring). Returns the kept (ids, labels),
    or None when the row is dropped, and the outcome: None (fits as it is), `truncated` or `dropped`."""
    if len(ids) <= max_length:
        return ((ids, labels), None) if _has_target(labels) else (None, "dropped")
    if mode == "drop":
        return None, "dropped"
    if mode == "left":
        head = 1 if bos is not None and ids and ids[0] == bos else 0
        first = next((k for k, x in enumerate(labels) if x != IGNORE), len(labels))
        cut = max(0, min(len(ids) - max_length, first - head))  # the context gives way, from its start
        ids, labels = ids[:head] + ids[head + cut :], labels[:head] + labels[head + cut :]
    ids, labels = ids[:max_length], labels[:max_length]
    return ((ids, labels), "truncated") if _has_target(labels) else (None, "dropped")


def fit_pair(
    prompt: list[int], chosen: list[int], rejected: list[int], max_length: int, mode: str, bos: Optional[int] = None
) -> tuple[Optional[tuple[list[int], list[int], list[int]]], Optional[str]]:
    """A preference pair fitted into `max_length`: both sides keep the same prompt (cut, with `left`, as much as
    the longer response needs), then each side loses its end if still too long. Returns (prompt, chosen,
    rejected) as kept, or None when the pair is dropped (a side with no response token left), and the outcome."""
    longest = len(prompt) + max(len(chosen), len(rejected))
    if longest <= max_length:
        return (prompt, chosen, rejected), None
    if mode == "drop":
        return None, "dropped"
    if mode == "left":
        head = 1 if bos is not None and prompt and prompt[0] == bos else 0
        cut = max(0, min(longest - max_length, len(prompt) - head))
        prompt = prompt[:head] + prompt[head + cut :]
    room = max_length - len(prompt)
    if room < 1:
        return None, "dropped"
    return (prompt, chosen[:room], rejected[:room]), "truncated"


def cut_text(text: str, fits: Callable[[str], bool], keep: str) -> Optional[str]:
    """The longest part of `text` that `fits`, keeping its `end` (cut from the start) or its `start` (cut from
    the end): a binary search over character positions, so any tokenizer and chat template measure it. None
    when not even the empty text fits."""
    if fits(text):
        return text
    part = (lambda c: text[c:]) if keep == "end" else (lambda c: text[: len(text) - c])
    if not fits(part(len(text))):
        return None
    lo, hi = 0, len(text)  # part(lo) does not fit, part(hi) does: find the smallest cut that fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(part(mid)) else (mid, hi)
    return part(hi)


def warn(message: Optional[str], console: Optional["Console"], quiet: bool) -> None:
    """Say `message` once: a yellow line on the run's console, or a `TruncationWarning` when the run is quiet
    (or has no console)."""
    if message is None:
        return
    if quiet or console is None:
        warnings.warn(message, TruncationWarning, stacklevel=2)
        return
    from rich.markup import escape

    console.print(f"[yellow]warning: {escape(message)}[/]")
