"""Triple-level micro F1 of generated relation triples (the measure of generative relation extraction, Huguet
Cabot and Navigli 2021, "REBEL: Relation Extraction By End-to-end Language generation", Findings of EMNLP):
the model's greedy answer is parsed as `head | relation | tail` lines (`lifelong.data.scenarios.triples`), and a
triple counts when its three parts equal a gold triple's after normalisation (case-folded, whitespace runs as
one space, no surrounding sentence punctuation: `triples.normalize`); triples are matched as multisets (a triple
listed twice matches at most as many gold copies). A line that is not three `|`-separated parts is a false
positive; with the item's `relations` set (`data.labels`, class-incremental), gold and predicted triples of
other relations are left out.

Per-example statistics are the counts (tp, fp, fn); the task's F1 is computed from their sums (micro, corpus
level), precision and recall are reported beside it (0 when a denominator is 0, as seqeval does)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.data.scenarios.triples import normalize, parse_answer
from lifelong.eval.scorers import SCORERS, _prf
from lifelong.eval.scorers.entity_f1 import generations


class TripleF1Params(Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example (an answer is one line per triple)."""


def triple_counts(item: dict, generation: str) -> tuple[tuple[int, int, int], dict[str, Any]]:
    """(tp, fp, fn) of one generated answer against the item's gold triples, and its audit record fields."""
    found, unparsed = parse_answer(generation)
    pred = [tuple(normalize(x) for x in t) for t in found]
    gold = [tuple(normalize(x) for x in t) for t in item.get("triples") or []]
    relations = item.get("relations")
    if relations:
        keep = {normalize(r) for r in relations}
        pred = [t for t in pred if t[1] in keep]
        gold = [t for t in gold if t[1] in keep]
    tp, fp, fn = _prf.counts(pred, gold, len(unparsed))
    return (tp, fp, fn), {
        "predicted": [list(t) for t in pred],
        "compared_gold": [list(t) for t in gold],
        "unparsed": unparsed,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


@SCORERS.register("triple_f1")
class TripleF1(_prf.MicroPRF):
    Params = TripleF1Params
    formats = ("triples",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: TripleF1Params = self.params  # type: ignore[assignment]
        out = np.zeros((len(items), 3))
        records = []
        for n, (it, raw) in enumerate(zip(items, generations(lm, items, p.max_new_tokens))):
            (tp, fp, fn), rec = triple_counts(it, raw)
            out[n] = (tp, fp, fn)
            records.append(
                {
                    "index": n,
                    "score": float(_prf.f1(out[n : n + 1])),
                    "prediction": raw.strip(),
                    "gold": [" | ".join(t) for t in it.get("triples") or []],
                    "generation": raw,
                    "relations": it.get("relations"),
                    **rec,
                }
            )
        return out, records
