"""Accuracy on the final answer extracted from a greedy generation, as math word-problem benchmarks score it
(GSM8K: Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems": the model may reason first; only
the final number counts).

`extract: last_number` takes the last number written in the generation (`1,234`, `-3`, `3.50`, `$12`);
`extract: regex` takes group 1 of the last match of `pattern` (e.g. `"#### (\\S+)"` or `"answer is (.+?)\\."`).
Numbers are compared as numbers (`1,234` equals `1234.0`, `3.50` equals `3.5`), anything else as text after the
SQuAD normalisation. A reference that is a number as a whole is taken as it is; any other reference (a worked
solution ending in `#### 72`) goes through the same extraction, and is compared whole when nothing is found.
Each item's record shows the generation, what was extracted from it and the value compared."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations
from lifelong.eval.scorers.base import Scorer
from lifelong.eval.scorers.exact_match import normalize

NUMBER = r"[-+]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\$?\.\d+"
IN_TEXT = re.compile(r"(?<![\w.,$])(?:" + NUMBER + r")")
"""A number in running text: not glued to a word, a decimal point or another number (so `5-3` gives 5 and 3)."""
WHOLE = re.compile(r"\s*(?:" + NUMBER + r")\s*\.?\s*")


class AnswerAccuracyParams(Strict):
    extract: Literal["last_number", "regex"] = "last_number"
    """How the final answer is found in the generation: the last number in it, or group 1 of the last match of
    `pattern`."""
    pattern: Optional[str] = None
    """A regular expression with one group, for `extract: regex`."""
    first_line: bool = False
    """Look only at the first line of the generation (off: reasoning may take several lines)."""
    max_new_tokens: int = Field(default=128, ge=1, le=65536)
    """Generation budget per example (greedy)."""

    @model_validator(mode="after")
    def _pattern(self) -> "AnswerAccuracyParams":
        if self.extract == "regex":
            if not self.pattern:
                raise ValueError('extract: regex needs a pattern with one group, e.g. pattern: "#### (\\S+)"')
            try:
                groups = re.compile(self.pattern).groups
            except re.error as e:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {e}") from None
            if groups != 1:
                raise ValueError(f"pattern {self.pattern!r} has {groups} groups; it needs exactly one (the answer)")
        elif self.pattern is not None:
            raise ValueError("pattern is only read with extract: regex; remove it or set extract: regex")
        return self


Value = Union[float, str]


def as_number(text: str) -> Optional[float]:
    """The number `text` is as a whole (`"1,234"` -> 1234.0, `" $3.50."` -> 3.5), else None."""
    if not WHOLE.fullmatch(text):
        return None
    return float(text.strip().rstrip(".").strip().replace(",", "").replace("$", ""))


def extract(text: str, p: AnswerAccuracyParams) -> Optional[str]:
    """The final answer written in `text` (its text as written), or None when there is none."""
    if p.extract == "regex":
        found = [m.group(1) for m in re.finditer(p.pattern or "", text)]
        return found[-1].strip() if found and found[-1] is not None else None
    numbers = IN_TEXT.findall(text)
    return numbers[-1] if numbers else None


def value(answer: str) -> Value:
    """What an extracted answer is compared as: its number, else its normalised text."""
    n = as_number(answer)
    return n if n is not None else normalize(answer)


def reference_value(target: str, p: AnswerAccuracyParams) -> Value:
    """A reference's value: a number as a whole as it is, else what the extraction finds in it, else its text."""
    if as_number(target) is not None:
        return value(target)
    found = extract(target, p)
    return value(found if found is not None else target)


@SCORERS.register("answer_accuracy")
class AnswerAccuracy(Scorer):
    Params = AnswerAccuracyParams
    metric = "accuracy"
    formats = ("qa", "prompt_response", "messages")

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: AnswerAccuracyParams = self.params  # type: ignore[assignment]
        raws = generations(lm, items, p.max_new_tokens)
        out = np.zeros((len(items), 1))
        records = []
        for n, (raw, it) in enumerate(zip(raws, items)):
            found = extract(answer_text(raw, p.first_line), p)
            got = value(found) if found is not None else None
            golds = [reference_value(str(t), p) for t in it["targets"]]
            out[n, 0] = float(got is not None and any(type(got) is type(g) and got == g for g in golds))
            records.append(
                {
                    "index": n,
                    "score": float(out[n, 0]),
                    "prediction": found if found is not None else "",
                    "gold": [str(t) for t in it["targets"]],
                    "generation": raw,
                    "extracted": found,  # None: no answer found in the generation
                    "compared": got,
                    "compared_targets": golds,
                    "extract": p.extract,
                }
            )
        return out, records
