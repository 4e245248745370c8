"""Continual code completion: rows of a code context and the line(s) that come next, learned one code style or
repository after another and scored on the first generated line (scorer `edit_similarity`: rapidfuzz's
normalized Indel similarity, the `fuzz.ratio` edit similarity of CodeXGLUE's line completion and of TRACE's Py150
task, with exact match of the line beside it). The protocol is TRACE's (Wang et al. 2023: Py150 code completion
among the continual tasks) after CodeXGLUE's line-level completion (Lu et al. 2021).

A row: `{"prefix": "def area(r):\\n", "completion": "    return 3.14159 * r * r"}` (or `prompt` for `prefix`).
The prompt is the code itself, a plain completion prompt (run it with `model.chat_template: off` to keep a chat
model's template out of the way). The prefix's trailing whitespace (the line break, and any indentation already
typed) is moved to the start of the response, so a completion never starts after an inserted space: plain
prompt/response rows put one between prompt and response when the response starts with a letter."""

from __future__ import annotations

from typing import Any, ClassVar

from lifelong.data.formats import shown
from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat


@SCENARIOS.register("code")
class Code(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("prefix", "completion"), ("prompt", "completion"))
    scorer = "edit_similarity"
    example = (
        '{"prefix": "def area(r):\\n", "completion": "    return 3.14159 * r * r"}\n'
        "the code as the prompt -> its next line (edit similarity and exact match of the first line)"
    )
    protocol = (
        "TRACE (Wang et al. 2023): Py150 code completion among the continual tasks, edit similarity "
        "(fuzz.ratio, as CodeXGLUE line completion, Lu et al. 2021)"
    )

    def matches(self, keys: set[str]) -> bool:
        """Inferred from `prefix + completion` only: `prompt + completion` is also the usual shape of general
        instruction data, which must not turn into code by inference (declare `data.format: code` for it)."""
        return {"prefix", "completion"} <= keys

    def field(self, row: dict[str, Any]) -> str:
        """The field holding the code context: `prefix`, else `prompt`."""
        return "prefix" if "prefix" in row else "prompt"

    def check(self, row: dict[str, Any], where: str) -> None:
        f = self.field(row)
        for name in (f, "completion"):
            if name not in row or row[name] is None:
                raise ValueError(
                    f"{where}: field {name!r} is missing (format code needs prefix + completion, or prompt + "
                    "completion); rename columns with data.columns"
                )
        if not isinstance(row[f], str) or not row[f].strip():
            raise ValueError(f"{where}: field {f!r} must be non-empty code (a string), got {shown(row[f])}")
        c = row["completion"]
        if not isinstance(c, str) or not c.strip():
            raise ValueError(
                f"{where}: field 'completion' must be the next line(s) of code, a string with a non-blank line, "
                f"got {shown(c)}"
            )

    def split(self, row: dict[str, Any]) -> tuple[str, str]:
        """(prompt, response): the prefix without its trailing whitespace, and that whitespace + the completion."""
        code = str(row[self.field(row)])
        head = code.rstrip()
        return head, code[len(head) :] + str(row["completion"])

    def prompt(self, row: dict[str, Any]) -> str:
        return self.split(row)[0]

    def response(self, row: dict[str, Any]) -> str:
        return self.split(row)[1]

    def targets(self, row: dict[str, Any]) -> list[str]:
        return [str(row["completion"])]
