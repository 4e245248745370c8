"""Exact match of the greedy generation against the target(s), after normalisation (lower case, no
punctuation, no articles, single spaces: the SQuAD normalisation, Rajpurkar et al. 2016); accuracy in percent.
Generations are batched (`HFLM.generate`: left padding, KV cache, greedy); an item's audit record holds the
raw generation and the normalised strings compared."""

from __future__ import annotations

import re
import string
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


class ExactMatchParams(Strict):
    max_new_tokens: int = Field(default=32, ge=1, le=65536)
    """Generation budget per example."""
    first_line: bool = True
    """Compare only the first line of the generation."""
    normalize: bool = True
    """Apply the SQuAD normalisation before comparing."""
    match: Literal["exact", "contains"] = "exact"
    """`exact`: the generation equals a target; `contains`: a target appears in the generation as whole
    words (for models that answer in a sentence)."""


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@SCORERS.register("exact_match")
class ExactMatch(Scorer):
    Params = ExactMatchParams
    metric = "exact_match"
    formats = ("prompt_response", "messages", "classification")

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: ExactMatchParams = self.params  # type: ignore[assignment]
        ctxs = [
            lm.fm.messages_prompt_ids(it["messages"]) if "messages" in it else lm.fm.prompt_ids(it["prompt"])
            for it in items
        ]
        gens = lm.generate(ctxs, max_new_tokens=p.max_new_tokens)  # batched, greedy
        f = normalize if p.normalize else str.strip
        out = np.zeros((len(items), 1))
        records = []
        for n, (raw, it) in enumerate(zip(gens, items)):
            g = raw.strip().split("\n")[0] if p.first_line else raw.strip()
            targets = [f(t) for t in it["targets"]]
            if p.match == "contains":
                out[n, 0] = float(any(f" {t} " in f" {f(g)} " for t in targets if t))
            else:
                out[n, 0] = float(any(f(g) == t for t in targets))
            records.append(
                {
                    "index": n,
                    "score": out[n, 0],
                    "prediction": g,
                    "gold": [str(t) for t in it["targets"]],
                    "generation": raw,
                    "compared": f(g),  # the strings the match is decided on
                    "compared_targets": targets,
                    "match": p.match,
                }
            )
        return out, records
