"""Edit requests: the documented jsonl format, its checks, and tokenization of a request.

One JSON object per line (docs/editing.md):

    {"prompt": "The capital of {} is", "subject": "France", "target_new": "Rome", "target_true": "Paris",
     "paraphrases": ["France's capital city is"], "neighborhood": ["The capital of Germany is"],
     "generation": ["France is known for"], "id": "fr-capital"}

`prompt` holds `{}` where the subject goes; `target_true` (the old answer) is optional but needed for the
probability-comparison metrics. Paraphrases are full prompts (or templates with `{}`). Neighbourhood prompts
are other subjects whose answer must not change: strings (their answer is taken to be `target_true`, the
CounterFact convention) or `{"prompt": ..., "target": ...}`. Targets are continuations: a space is put between
prompt and target unless the prompt ends in whitespace or the target starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class EditRequest:
    prompt: str
    subject: str
    target_new: str
    target_true: Optional[str] = None
    paraphrases: list[str] = field(default_factory=list)
    neighborhood: list[dict] = field(default_factory=list)
    """`{"prompt", "target"}` pairs; target None when neither it nor `target_true` is known."""
    generation: list[str] = field(default_factory=list)
    id: Optional[str] = None
    where: str = "<request>"

    @property
    def text(self) -> str:
        """The edit prompt with the subject filled in."""
        return self.prompt.replace("{}", self.subject)

    def to_row(self) -> dict:
        row: dict[str, Any] = {"prompt": self.prompt, "subject": self.subject, "target_new": self.target_new}
        if self.target_true is not None:
            row["target_true"] = self.target_true
        for k in ("paraphrases", "generation"):
            if getattr(self, k):
                row[k] = list(getattr(self, k))
        if self.neighborhood:
            row["neighborhood"] = [dict(n) for n in self.neighborhood]
        if self.id is not None:
            row["id"] = self.id
        return row


FIELDS = ("prompt", "subject", "target_new", "target_true", "paraphrases", "neighborhood", "generation", "id")
REQUIRED = FIELDS[:3]


def _target(row: dict, key: str, where: str) -> Optional[str]:
    v = row.get(key)
    if isinstance(v, dict) and "str" in v:  # CounterFact's {"str": ...}
        v = v["str"]
    if v is None and key == "target_true":
        return None
    if v is None:
        raise ValueError(f"{where}: field {key!r} is missing (an edit request needs {', '.join(REQUIRED)})")
    if not isinstance(v, str) or not v.strip():
        raise ValueError(
            f"{where}: field {key!r} must be a non-empty string (the "
            f"{'new' if key == 'target_new' else 'old'} answer), got {v!r}"
        )
    return v


def parse_request(row: dict, where: str = "<request>") -> EditRequest:
    """One request from a row; errors name `where` (file and line) and the field."""
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field {unknown[0]!r} (request fields: {', '.join(FIELDS)})")
    for f in ("prompt", "subject"):
        if row.get(f) is None:
            raise ValueError(f"{where}: field {f!r} is missing (an edit request needs {', '.join(REQUIRED)})")
        if not isinstance(row[f], str) or not row[f].strip():
            raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {row[f]!r}")
    prompt, subject = row["prompt"], row["subject"]
    if prompt.count("{}") != 1:
        hint = f"; write it as {prompt.replace(subject, '{}', 1)!r}" if subject in prompt and "{}" not in prompt else ""
        raise ValueError(
            f"{where}: field 'prompt' must contain exactly one {{}} where the subject "
            f"{subject!r} goes, got {prompt!r}{hint}"
        )
    if not prompt.replace("{}", subject).strip():
        raise ValueError(f"{where}: the prompt is empty once the subject is filled in")
    new, old = _target(row, "target_new", where), _target(row, "target_true", where)
    if old is not None and old.strip() == new.strip():  # type: ignore[union-attr]
        raise ValueError(f"{where}: target_new equals target_true ({new!r}); an edit must change the answer")

    def prompts(key: str) -> list[str]:
        v = row.get(key, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(p, str) and p.strip() for p in v):
            raise ValueError(f"{where}: field {key!r} must be a list of non-empty strings")
        return [p.replace("{}", subject) for p in v]

    neigh = []
    raw = row.get("neighborhood", [])
    for k, n in enumerate(raw if isinstance(raw, list) else [raw]):
        if isinstance(n, str) and n.strip():
            neigh.append({"prompt": n, "target": old})
        elif isinstance(n, dict) and isinstance(n.get("prompt"), str) and n["prompt"].strip():
            t = n.get("target", old)
            if t is not None and (not isinstance(t, str) or not t.strip()):
                raise ValueError(f"{where}: neighborhood[{k}].target must be a non-empty string")
            neigh.append({"prompt": n["prompt"], "target": t})
        else:
            raise ValueError(f"{where}: neighborhood[{k}] must be a prompt string or {{prompt, target}}")
    return EditRequest(
        prompt=prompt,
        subject=subject,
        target_new=new,  # type: ignore[arg-type]
        target_true=old,
        paraphrases=prompts("paraphrases"),
        neighborhood=neigh,
        generation=prompts("generation"),
        id=str(row["id"]) if row.get("id") is not None else None,
        where=where,
    )


def load_requests(source: Any) -> list[EditRequest]:
    """Requests from a jsonl path, a DataConfig, a list of rows or of EditRequests."""
    if isinstance(source, (str, Path)):
        from lifelong.config import DataConfig

        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{path}: no such edit request file")
        source = DataConfig(path=str(path))
    if isinstance(source, list):
        if all(isinstance(r, EditRequest) for r in source):
            return list(source)
        return [parse_request(r, f"request {i}") for i, r in enumerate(source)]
    from lifelong.data.sources import load_rows

    rows = load_rows(source)
    if not rows.rows:
        raise ValueError(f"{rows.source}: no edit requests")
    gone = [f for f in REQUIRED if rows.columns is not None and f not in rows.columns]
    if gone:  # a CSV without the column: say so at its header, not at every row
        raise ValueError(
            f"{rows.source} line 1: no column {gone[0]!r} in the header "
            f"({', '.join(rows.columns or [])}); an edit request needs {', '.join(REQUIRED)}"
        )
    return [parse_request(r, w) for r, w in zip(rows.rows, rows.where)]


# ---- tokenization -----------------------------------------------------------------------------------
def encode(tok: Any, text: str) -> list[int]:
    """Token ids of a text as the model reads it (with the tokenizer's BOS when it adds one)."""
    return list(tok(text)["input_ids"])


def continuation(prompt: str, target: str) -> str:
    return target if prompt[-1:].isspace() or target[:1].isspace() else " " + target


def target_ids(tok: Any, prompt: str, target: str) -> list[int]:
    ids = list(tok(continuation(prompt, target), add_special_tokens=False)["input_ids"])
    if not ids:
        raise ValueError(f"target {target!r} tokenizes to nothing")
    return ids


def subject_position(tok: Any, template: str, subject: str, where: str = "<request>") -> tuple[list[int], int]:
    """Token ids of `template` with the subject filled in, and the index of the subject's last token.
    Raises when the tokenizer merges the subject's end with the following text (no last subject token)."""
    before, after = template.split("{}", 1)
    full = encode(tok, before + subject + after)
    upto = encode(tok, before + subject)
    n_before = len(encode(tok, before.rstrip()))  # "The " may end in a lone space token; "The iPhone" not
    if full[: len(upto)] != upto or len(upto) <= n_before:
        raise ValueError(
            f"{where}: the tokenizer splits subject {subject!r} across the text after it in "
            f"{before + subject + after!r}, so no token ends the subject; put a space or "
            "punctuation after the subject in the prompt"
        )
    return full, len(upto) - 1
