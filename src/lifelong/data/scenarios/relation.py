"""Continual relation extraction as relation classification: rows of a text, a head and a tail entity mentioned in
it, and the relation the text states between them; new relations arrive with each stage. The protocol is Wang
et al. 2019, "Sentence Embedding Alignment for Lifelong Relation Extraction" (NAACL), and Zhao et al. 2022,
"Consistent Representation Learning for Continual Relation Extraction" (CRL, Findings of ACL): after each
stage, every seen stage's test set is classified among all relations seen so far.

A row: `{"text": "Paris is the capital of France.", "head": "Paris", "tail": "France", "relation": "capital
of"}`. The model learns to answer the relation's label. Scored by `relation_accuracy`: the label with the
highest log-likelihood among the relations seen so far (`choice_labels`: the options of an item at a matrix
row are the relations of the stages up to that row, plus its own task's; `data.labels` on the eval task fixes
them instead); `exact_match` scores a generated label."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat


def _shown(v: Any) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def _string(row: dict[str, Any], f: str, where: str) -> str:
    v = row[f]
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {_shown(v)}")
    if "\n" in v:
        raise ValueError(f"{where}: field {f!r} must be one line, got {_shown(v)}")
    return v


@SCENARIOS.register("relation")
class Relation(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("text", "head", "tail", "relation"),)
    scorer = "relation_accuracy"
    choice_labels = True
    example = (
        '{"text": "Paris is the capital of France.", "head": "Paris", "tail": "France", "relation": "capital of"}\n'
        "Text: Paris is the capital of France. How is Paris related to France? -> capital of"
    )
    protocol = (
        "Wang et al. 2019 / CRL (Zhao et al. 2022): continual relation extraction, new relations per stage, "
        "accuracy among all relations seen so far"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: field 'text' must be a non-empty string, got {_shown(text)}")
        for f in ("head", "tail"):
            v = _string(row, f, where)
            if v.strip().lower() not in text.lower():
                raise ValueError(
                    f"{where}: field {f!r} {_shown(v)} is not mentioned in the text; write the entity as the text "
                    "does (case aside)"
                )
        _string(row, "relation", where)

    def prompt(self, row: dict[str, Any]) -> str:
        return f"Text: {row['text']}\nHow is {row['head']} related to {row['tail']}? Answer with the relation."

    def response(self, row: dict[str, Any]) -> str:
        return str(row["relation"]).strip()

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        if self.labels and self.response(row) not in self.labels:
            raise ValueError(
                f"relation {_shown(row['relation'])} is not in the label set {self.labels} (data.labels, else the "
                "relations of the stage's training rows); list it in data.labels or drop the row"
            )
        return {"label": self.response(row), "head": str(row["head"]), "tail": str(row["tail"])}

    def row_labels(self, row: dict[str, Any]) -> list[str]:
        return [str(row["relation"]).strip()]
