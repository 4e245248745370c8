"""Continual relation extraction as triple generation: rows of a text and the (head, relation, tail) triples it
states; new relations arrive with each stage (the continual relation extraction protocol of Wang et al. 2019,
"Sentence Embedding Alignment for Lifelong Relation Extraction", with generated triples scored as in
generative relation extraction, Huguet Cabot and Navigli 2021, "REBEL: Relation Extraction By End-to-end
Language generation": micro precision, recall and F1 over exact triples). Scored by `triple_f1`.

A row: `{"text": "...", "triples": [["Paris", "capital of", "France"], ...]}` (or triples as objects `{"head",
"relation", "tail"}`); an empty list is a text stating none. The model answers one triple per line as
`head | relation | tail` in the rows' order, or `none`. `data.labels` lists the relations a data section keeps:
the training answer names only those, and an eval task scores only triples of those relations (gold and
predicted), as NER does with entity types; a stage's eval task without `labels` takes the relations of the
stage's training rows."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat

NONE = "none"
SEP = " | "
PARTS = ("head", "relation", "tail")


def _shown(v: Any) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def triples_of(row: dict[str, Any], where: str = "row") -> list[tuple[str, str, str]]:
    """The row's triples as (head, relation, tail) strings, stripped; ValueError naming the triple for anything
    malformed."""
    text, given = row.get("text"), row.get("triples")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: field 'text' must be a non-empty string, got {_shown(text)}")
    if not isinstance(given, list):
        raise ValueError(
            f"{where}: field 'triples' must be a list of [head, relation, tail] (an empty list for none), got "
            f"{_shown(given)}"
        )
    out = []
    for k, t in enumerate(given):
        if isinstance(t, dict):
            if set(t) != set(PARTS):
                raise ValueError(
                    f"{where}: triples[{k}] must have exactly the keys head, relation, tail, got {_shown(t)}"
                )
            t = [t[p] for p in PARTS]
        if not isinstance(t, (list, tuple)) or len(t) != 3:
            raise ValueError(f"{where}: triples[{k}] must be [head, relation, tail], got {_shown(t)}")
        for p, v in zip(PARTS, t):
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{where}: triples[{k}]: the {p} must be a non-empty string, got {_shown(v)}")
            if "\n" in v or "|" in v:
                raise ValueError(
                    f"{where}: triples[{k}]: the {p} {_shown(v)} cannot contain '|' or a line break (the answer "
                    "format is `head | relation | tail` per line)"
                )
        out.append((t[0].strip(), t[1].strip(), t[2].strip()))
    return out


def answer(triples: list[tuple[str, str, str]]) -> str:
    """The answer the model learns: `head | relation | tail` per line, or `none`."""
    return "\n".join(SEP.join(t) for t in triples) if triples else NONE


def parse_answer(generation: str) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The triples of a generated answer and the lines that are not `head | relation | tail` (each a wrong answer,
    a false positive for `triple_f1`). Blank lines and `none` lines name nothing."""
    found, unparsed = [], []
    for line in generation.strip().splitlines():
        s = line.strip()
        if not s or s.lower() == NONE:
            continue
        parts = [p.strip() for p in s.split("|")]
        if len(parts) == 3 and all(parts):
            found.append((parts[0], parts[1], parts[2]))
        else:
            unparsed.append(s)
    return found, unparsed


def normalize(part: str) -> str:
    """A triple's part as compared: case-folded, whitespace runs as one space, no leading or trailing space or
    sentence punctuation (`.,;:!?"'`)."""
    return " ".join(part.casefold().split()).strip(" .,;:!?\"'")


@SCENARIOS.register("triples")
class Triples(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("text", "triples"),)
    scorer = "triple_f1"
    example = (
        '{"text": "Paris is the capital of France.", "triples": [["Paris", "capital of", "France"]]}\n'
        "Extract the facts ... Text: Paris is the capital of France. -> Paris | capital of | France"
    )
    protocol = (
        "Wang et al. 2019 (continual relation extraction, new relations per stage); micro F1 over exact "
        "(head, relation, tail) triples as in REBEL (Huguet Cabot and Navigli 2021)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        triples_of(row, where)

    def kept(self, row: dict[str, Any]) -> list[tuple[str, str, str]]:
        """The row's triples of the kept relations (`labels`; all when unset)."""
        ts = triples_of(row)
        if self.labels:
            keep = set(self.labels)
            ts = [t for t in ts if t[1] in keep]
        return ts

    def prompt(self, row: dict[str, Any]) -> str:
        return (
            "Extract the facts the text states, one per line as `head | relation | tail`, or `none`.\n"
            f"Text: {row['text']}\nFacts:"
        )

    def response(self, row: dict[str, Any]) -> str:
        return answer(self.kept(row))

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "triples": [list(t) for t in self.kept(row)],
            "relations": list(self.labels) if self.labels else None,
        }

    def row_labels(self, row: dict[str, Any]) -> list[str]:
        return sorted({t[1] for t in triples_of(row)})
