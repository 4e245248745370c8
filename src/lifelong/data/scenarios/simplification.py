"""Continual text simplification: rows of a source sentence and one or more simpler rewrites of it, scored with SARI
(scorer `sari`, Xu et al. 2016, "Optimizing Statistical Machine Translation for Text Simplification", TACL),
which compares the output with the source and with the references, so each eval item carries its source. The
protocol is TRACE's (Wang et al. 2023: 20Minuten simplification scored by SARI among the stream's tasks).

A row: `{"source": "...", "references": ["...", ...]}` (ASSET and TurkCorpus have 10 and 8 references per
source), or `{"source": "...", "target": "..."}` for one reference. The first reference is what the model
learns. Format inference (`format: auto`) takes `source + target` rows as simplification only when they name no
language (`pair`, `src_lang`, `tgt_lang`: those are translation rows)."""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat
from lifelong.data.scenarios.summarization import references_field, text_field

LANGUAGE_FIELDS = {"pair", "src_lang", "tgt_lang"}


@SCENARIOS.register("simplification")
class Simplification(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("source", "references"), ("source", "target"))
    scorer = "sari"
    example = (
        '{"source": "The cat perched upon the mat.", "references": ["The cat sat on the mat.", "A cat sat."]}\n'
        "Simplify: <source>\\nSimplified: -> The cat sat on the mat. (SARI against the source and every reference)"
    )
    protocol = (
        "TRACE (Wang et al. 2023): simplification among the continual tasks; SARI (Xu et al. 2016), "
        "sentence-level and averaged as in Hugging Face evaluate's sari"
    )

    def matches(self, keys: set[str]) -> bool:
        if {"source", "references"} <= keys:
            return True
        return {"source", "target"} <= keys and not (keys & LANGUAGE_FIELDS)

    def field(self, row: dict[str, Any]) -> str:
        """The field holding the references: `references`, else `target`."""
        return "references" if "references" in row else "target"

    def check(self, row: dict[str, Any], where: str) -> None:
        text_field(row, "source", where, "simplification", "source + references (or source + target)")
        f = self.field(row)
        if f not in row or row[f] is None:
            raise ValueError(
                f"{where}: field 'references' is missing (format simplification needs source + references, a list "
                "of simpler rewrites, or source + target); rename columns with data.columns"
            )
        references_field(row, f, where, "reference")

    def prompt(self, row: dict[str, Any]) -> str:
        return f"Simplify: {row['source']}\nSimplified:"

    def response(self, row: dict[str, Any]) -> str:
        return self.targets(row)[0]

    def targets(self, row: dict[str, Any]) -> list[str]:
        v = row[self.field(row)]
        return [str(x) for x in v] if isinstance(v, list) else [str(v)]

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"source": str(row["source"])}
