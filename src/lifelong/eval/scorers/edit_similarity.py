"""Edit similarity of the first generated line against the reference's first line, 0-100: rapidfuzz's
`fuzz.ratio`, the normalized Indel similarity 100 * (1 - indel distance / (len(a) + len(b))), where the Indel
distance counts the character insertions and deletions that turn one line into the other (a substitution is one
of each), i.e. 100 * 2 * LCS / (len(a) + len(b)). This is the `fuzz.ratio` edit similarity of CodeXGLUE's line
completion evaluator and of TRACE's Py150 task (both call fuzzywuzzy's `fuzz.ratio`, which is this measure
rounded to an integer when python-Levenshtein is installed, and difflib's slightly different Ratcliff-Obershelp
ratio when it is not; rapidfuzz gives the Indel measure unrounded). Lines are compared stripped of surrounding
whitespace (CodeXGLUE strips its predictions; its references carry no indentation); several references: the
best. Exact match of the line (CodeXGLUE's: equal whitespace-separated tokens) is reported beside it."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations, need
from lifelong.eval.scorers.base import Scorer


class EditSimilarityParams(Strict):
    max_new_tokens: int = Field(default=48, ge=1, le=65536)
    """Generation budget per example (one line of code)."""
    literals: Literal["keep", "codexglue"] = "keep"
    """`codexglue`: both sides have the literal placeholders of CodeXGLUE's Py150 / TRACE's code task written
    back first, as TRACE's evaluator does (`<NUM_LIT>` -> `0`, `<STR_LIT>` and `<CHAR_LIT>` -> nothing,
    `<STR_LIT:v>` / `<NUM_LIT:v>` / `<CHAR_LIT:v>` -> `v`); `keep`: lines compared as written."""


LITERAL = re.compile(r"<(STR|NUM|CHAR)_LIT:(.*?)>", re.S)


def codexglue_literals(code: str) -> str:
    """CodeXGLUE's literal placeholders written back, as TRACE's Py150 evaluator does before `fuzz.ratio`."""
    code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "")
    return LITERAL.sub(lambda m: m.group(2), code)


def first_line(text: str) -> str:
    """The first non-blank line, stripped."""
    return answer_text(text, True)


@SCORERS.register("edit_similarity")
class EditSimilarity(Scorer):
    Params = EditSimilarityParams
    metric = "edit_similarity"
    formats = ("prompt_response", "messages")

    def also_reported(self) -> tuple[str, ...]:
        return ("exact_match",)

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return stats[..., 0].mean(axis=-1)  # column 0 is already 0-100

    def signature(self) -> Optional[str]:
        import importlib.metadata as md

        try:
            version = md.version("rapidfuzz")
        except md.PackageNotFoundError:
            version = "?"
        return f"rapidfuzz {version}|fuzz.ratio|first line, stripped|best of refs"

    @staticmethod
    def stats(predictions: list[str], references: list[list[str]], literals: str = "keep") -> np.ndarray:
        """Statistics (n, 2): edit similarity (0-100) and exact match (0/1) of first lines, best reference;
        `literals: codexglue` writes the literal placeholders back on both sides first."""
        fuzz = need("rapidfuzz.fuzz", "edit_similarity")
        fix = codexglue_literals if literals == "codexglue" else (lambda x: x)
        out = np.zeros((len(predictions), 2))
        for n, (pred, refs) in enumerate(zip(predictions, references)):
            line = fix(first_line(pred))
            gold = [fix(first_line(r)) for r in refs]
            out[n, 0] = max(float(fuzz.ratio(line, g)) for g in gold)
            out[n, 1] = float(any(line.split() == g.split() for g in gold))
        return out

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: EditSimilarityParams = self.params  # type: ignore[assignment]
        raws = generations(lm, items, p.max_new_tokens)
        refs = [[str(t) for t in it["targets"]] for it in items]
        out = self.stats(raws, refs, p.literals)
        records = [
            {
                "index": n,
                "score": float(out[n, 0]),
                "prediction": first_line(raws[n]),
                "gold": [first_line(r) for r in refs[n]],
                "generation": raws[n],
                "exact_match": bool(out[n, 1]),
            }
            for n in range(len(items))
        ]
        return out, records
