"""Continual summarization: rows of a document and its reference summary (or several), learned one domain or task
after another and scored with ROUGE (scorer `rouge`, rouge-score's F-measure, the best reference per example).
The protocol is TRACE's (Wang et al. 2023, "TRACE: A Comprehensive Benchmark for Continual Learning in Large
Language Models": MeetingBank summarization scored by ROUGE-L among the stream's tasks).

A row: `{"document": "...", "summary": "..." or ["...", ...]}`. Several summaries are several references (ROUGE
takes the best one; the first is what the model learns)."""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.data.formats import shown
from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat


def text_field(row: dict[str, Any], f: str, where: str, fmt: str, need: str) -> None:
    """`row[f]` is a non-empty string, else a located error naming the field."""
    if f not in row or row[f] is None:
        raise ValueError(
            f"{where}: field {f!r} is missing (format {fmt} needs {need}); rename columns with data.columns"
        )
    if not isinstance(row[f], str) or not row[f].strip():
        raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {shown(row[f])}")


def references_field(row: dict[str, Any], f: str, where: str, what: str) -> list[str]:
    """`row[f]` as a list of references: one non-empty string, or a non-empty list of them."""
    v = row[f]
    if isinstance(v, str) and v.strip():
        return [v]
    if isinstance(v, list) and v:
        bad = next((k for k, x in enumerate(v) if not isinstance(x, str) or not x.strip()), None)
        if bad is None:
            return [str(x) for x in v]
        raise ValueError(
            f"{where}: field {f!r} has {shown(v[bad])} at index {bad}; every {what} must be a non-empty string"
        )
    raise ValueError(
        f"{where}: field {f!r} must be a non-empty string or a non-empty list of {what}s (strings), got {shown(v)}"
    )


@SCENARIOS.register("summarization")
class Summarization(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("document", "summary"),)
    scorer = "rouge"
    example = (
        '{"document": "The council voted 7-2 on Tuesday to close the bridge for repairs in May.", '
        '"summary": "Bridge to close for repairs."}\n'
        "Summarize: <document>\\nSummary: -> Bridge to close for repairs. (ROUGE-L F against every reference)"
    )
    protocol = (
        "TRACE (Wang et al. 2023): summarization among the continual tasks, ROUGE-L; ROUGE via rouge-score (Lin 2004)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        text_field(row, "document", where, "summarization", "document + summary")
        if "summary" not in row or row["summary"] is None:
            raise ValueError(
                f"{where}: field 'summary' is missing (format summarization needs document + summary); "
                "rename columns with data.columns"
            )
        references_field(row, "summary", where, "reference summary")

    def prompt(self, row: dict[str, Any]) -> str:
        return f"Summarize: {row['document']}\nSummary:"

    def response(self, row: dict[str, Any]) -> str:
        return self.targets(row)[0]

    def targets(self, row: dict[str, Any]) -> list[str]:
        s = row["summary"]
        return [str(x) for x in s] if isinstance(s, list) else [str(s)]
