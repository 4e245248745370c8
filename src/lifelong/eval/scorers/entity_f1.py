"""Entity-level micro F1 of generated named entities (Tjong Kim Sang and De Meulder 2003, the CoNLL-2003 shared
task's measure, as seqeval computes it for tag sequences): the model's greedy answer is parsed as `type: mention`
lines (`lifelong.data.scenarios.ner`), and an entity counts when its type and its mention string are exactly a
gold entity's. A mention stands for a span of the text (`ner.locate`: the gold span of that type and string
while one is left, so a mention listed k times matches up to k gold entities; else the first free occurrence in
the text), so this is exact span-and-type matching: on tagged (BIO) data it equals seqeval's micro F1 over the
tag sequences those spans give (tests/test_scenario_ner.py checks it to 1e-6). A line that is not
`type: mention` is a false positive; with the item's `types` set (`data.labels`, class-incremental NER), gold
and predicted entities of other types are left out.

Per-example statistics are the counts (tp, fp, fn); the task's F1 is computed from their sums (micro, corpus
level, so a bootstrap resamples examples), precision and recall are reported beside it (seqeval's convention:
0 when a denominator is 0). Each item's record holds the generation, the parsed entities with the span each was
matched to, and the gold entities."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.data.scenarios.ner import locate, mention_key, parse_answer
from lifelong.eval.scorers import SCORERS, _prf


class EntityF1Params(Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example (an answer is one line per entity)."""


def generations(lm: Any, items: list[dict], max_new_tokens: int) -> list[str]:
    """The greedy continuation of each item's prompt (batched)."""
    return list(lm.generate([lm.fm.prompt_ids(it["prompt"]) for it in items], max_new_tokens=max_new_tokens))


def entity_counts(item: dict, generation: str) -> tuple[tuple[int, int, int], dict[str, Any]]:
    """(tp, fp, fn) of one generated answer against the item's gold entities, and its audit record fields."""
    found, unparsed = parse_answer(generation)
    gold = list(item.get("entities") or [])
    types = item.get("types")
    other: list[tuple[str, str]] = []
    if types:
        keep = set(types)
        other = [f for f in found if f[0] not in keep]
        found = [f for f in found if f[0] in keep]
        gold = [g for g in gold if g["type"] in keep]
    spans = locate(str(item.get("text", "")), gold, found)
    tp, fp, fn = _prf.counts(found, [(g["type"], mention_key(g["mention"])) for g in gold], len(unparsed))
    return (tp, fp, fn), {
        "predicted": [
            {"type": t, "mention": m, "span": list(s) if s is not None else None} for (t, m), s in zip(found, spans)
        ],
        "unparsed": unparsed,
        "other_types": [f"{t}: {m}" for t, m in other],  # named, but of a type this task does not score
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


@SCORERS.register("entity_f1")
class EntityF1(_prf.MicroPRF):
    Params = EntityF1Params
    formats = ("ner",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: EntityF1Params = self.params  # type: ignore[assignment]
        out = np.zeros((len(items), 3))
        records = []
        for n, (it, raw) in enumerate(zip(items, generations(lm, items, p.max_new_tokens))):
            (tp, fp, fn), rec = entity_counts(it, raw)
            out[n] = (tp, fp, fn)
            gold = [g for g in it.get("entities") or [] if not it.get("types") or g["type"] in it["types"]]
            records.append(
                {
                    "index": n,
                    "score": float(_prf.f1(out[n : n + 1])),  # this item's own F1
                    "prediction": raw.strip(),
                    "gold": [f"{g['type']}: {mention_key(g['mention'])}" for g in gold],
                    "generation": raw,
                    "gold_entities": gold,
                    "types": it.get("types"),
                    **rec,
                }
            )
        return out, records
