"""SQuAD token-level F1 of greedy answers, with exact match reported beside it (Rajpurkar et al. 2016, "SQuAD:
100,000+ Questions for Machine Comprehension of Text", the v1.1 evaluation: answers lower-cased, punctuation and
the articles a/an/the removed, whitespace collapsed; F1 over the bag of tokens; the maximum over the references).

Per-example statistics: column 0 the item's F1 (0-1), column 1 its exact match (0/1); the task score is the mean
F1 in percent, exact match beside it. When the normalised answer or reference is empty, F1 is 1 if both are empty
and 0 otherwise (the convention of the SQuAD v2.0 script and of torchmetrics' `SQuAD`; the v1.1 script gave 0
even when both were empty). Checked against `torchmetrics.functional.text.squad` on the same items
(tests/test_scenario_qa.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations
from lifelong.eval.scorers.base import Scorer
from lifelong.eval.scorers.exact_match import normalize


class SquadParams(Strict):
    max_new_tokens: int = Field(default=32, ge=1, le=65536)
    """Generation budget per example (greedy)."""
    first_line: bool = True
    """Score only the first line of the generation."""


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of one answer against one reference."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, references: list[str]) -> tuple[float, float]:
    """(F1, exact match) of an answer: each the maximum over the references."""
    f1 = max(token_f1(prediction, r) for r in references)
    em = max(float(normalize(prediction) == normalize(r)) for r in references)
    return f1, em


@SCORERS.register("squad")
class Squad(Scorer):
    Params = SquadParams
    metric = "f1"
    formats = ("qa", "prompt_response", "messages")

    def also_reported(self) -> tuple[str, ...]:
        return ("exact_match",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: SquadParams = self.params  # type: ignore[assignment]
        raws = generations(lm, items, p.max_new_tokens)
        out = np.zeros((len(items), 2))
        records = []
        for n, (raw, it) in enumerate(zip(raws, items)):
            ans, refs = answer_text(raw, p.first_line), [str(t) for t in it["targets"]]
            out[n] = squad_scores(ans, refs)
            records.append(
                {
                    "index": n,
                    "score": float(out[n, 0]),
                    "prediction": ans,
                    "gold": refs,
                    "generation": raw,
                    "compared": normalize(ans),  # the tokens F1 is computed on
                    "f1": float(out[n, 0]),
                    "exact_match": float(out[n, 1]),
                }
            )
        return out, records
