"""The scenario-format interface (see the package docstring)."""

from __future__ import annotations

from typing import Any, ClassVar, Optional


class ScenarioFormat:
    """One scenario's rows. Subclasses set the class attributes and implement `check`, `prompt`, `response`
    and, when their scorers need more than `targets`, `item`."""

    fields: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """Field sets a row may have (any one of them; e.g. NER takes `text + entities` or `tokens + tags`). The
    first set is the one `auto` format inference and `lifelong ls formats` show."""
    base: ClassVar[str] = "prompt_response"
    """The base format the rows become for training and eval (stage kinds and generic scorers of that format
    take this one too)."""
    scorer: ClassVar[str] = "exact_match"
    """The scorer an eval task of this format gets with `scorer: auto`."""
    example: ClassVar[str] = ""
    """Two lines for `lifelong ls formats`: a row as JSON, then what the model is asked and answers."""
    protocol: ClassVar[str] = ""
    """The paper or benchmark that defines the scenario's protocol (one line)."""
    choice_labels: ClassVar[bool] = False
    """Eval items choose among the labels seen so far in the stream (class-incremental classification, e.g.
    relation classification): `item` gives the row's `label`; the eval suite sets the items' `options` and
    `answer` per matrix row (`lifelong.eval.tasks.EvalTask.items_at`)."""
    labels: Optional[list[str]] = None
    """The data section's label set (`data.labels`, or the one a stage's eval task shares with its training
    rows), for formats that have one: NER keeps only these entity types, triples only these relations. None:
    all. Set on the instance before its rows are turned into examples or items."""

    def matches(self, keys: set[str]) -> bool:
        """Whether a row with fields `keys` is of this format (format inference)."""
        return any(set(f) <= keys for f in self.fields)

    def check(self, row: dict[str, Any], where: str) -> None:
        """Raise ValueError(f"{where}: ...") naming the field and how to fix it, for a malformed row."""
        if not self.matches(set(row)):
            sets = " or ".join("+".join(f) for f in self.fields)
            raise ValueError(f"{where}: a {self.registered_name} row needs the fields {sets}")  # type: ignore[attr-defined]

    def prompt(self, row: dict[str, Any]) -> str:
        """The prompt of a row when `data.template` is unset."""
        raise NotImplementedError

    def response(self, row: dict[str, Any]) -> str:
        """The text the model learns to answer (training)."""
        raise NotImplementedError

    def targets(self, row: dict[str, Any]) -> list[str]:
        """The reference answers of an eval item (default: the training response)."""
        return [self.response(row)]

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        """Eval-item fields beyond `prompt` and `targets` that this format's scorers read (JSON values)."""
        return {}

    def row_labels(self, row: dict[str, Any]) -> list[str]:
        """The labels a (checked) row holds, from which a stage's label set is built (NER: its entity types;
        relations: its relation). Default: none, the format has no label set."""
        return []
