"""Temporal knowledge probes (TemporalWiki, Jang et al. 2022; CKL, Jang et al. 2022, "Towards Continual
Knowledge Learning of Language Models"): did the model learn the new, keep the unchanged, drop the outdated?

Each item is a cloze (`prompt`) with the object current at its time (`targets`) and, for a changed fact, the
object it replaced (`outdated`). Two measurements per item:

- preference: the log-likelihood of the current object against the outdated one as continuations of the prompt
  (`HFLM.choice_loglikelihoods`, the way `choice` ranks options; `length_norm` as there): the model prefers the
  new fact when the current object scores higher (for several accepted strings, the best of each side);
- generation: the greedy continuation (first line), SQuAD-normalised, matches a current object (`match`:
  `prefix` by default, since a cloze is continued past its object; `exact`; `contains` as whole words), as CKL's
  exact match.

Column 0 (the matrix): with `score: auto`, preference for an item with an outdated object and generation for
one without, so on a probe file split by label (`data.where: {label: changed}`) the changed column reads
"prefers the new over the outdated" and the unchanged and new columns "states the fact"; `score: generation`
scores every item by generation. Beside the matrix (`also_reported`): `generation` (generation accuracy on
every item), `says_outdated` (the generation states an outdated object) and `prefers_outdated` (the outdated
object is the more likely; 0 for an item without one). Each item's record carries both log-likelihoods,
the generation and `prefers_outdated`."""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer
from lifelong.eval.scorers.exact_match import normalize


class TemporalParams(Strict):
    score: Literal["auto", "generation"] = "auto"
    """Column 0 of an item: `auto` the preference of the current over the outdated object where the item has
    one, generation accuracy where not; `generation` generation accuracy for every item."""
    max_new_tokens: int = Field(default=8, ge=1, le=65536)
    """Generation budget per item (an object is a few words)."""
    match: Literal["prefix", "exact", "contains"] = "prefix"
    """How a generation states an object, after SQuAD normalisation: it starts with it (whole words), equals
    it, or contains it as whole words."""
    length_norm: Literal["none", "token", "char"] = "none"
    """Divide each object's log-likelihood by its length in tokens or characters before comparing (as
    `choice`)."""


def states(generation: str, objects: list[str], match: str) -> bool:
    """Whether the (normalised) generation states one of `objects` by `match`."""
    g = normalize(generation)
    for o in objects:
        t = normalize(o)
        if not t:
            continue
        if match == "exact" and g == t or match == "prefix" and (g == t or g.startswith(t + " ")):
            return True
        if match == "contains" and f" {t} " in f" {g} ":
            return True
    return False


@SCORERS.register("temporal")
class Temporal(Scorer):
    Params = TemporalParams
    metric = "accuracy"
    formats = ("temporal",)

    def also_reported(self) -> tuple[str, ...]:
        return ("generation", "says_outdated", "prefers_outdated")

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: TemporalParams = self.params  # type: ignore[assignment]
        prompts = [lm.fm.prompt_ids(it["prompt"]) for it in items]
        gens = lm.generate(prompts, max_new_tokens=p.max_new_tokens)
        conts = [[lm.fm.response_ids(o, eos=False) for o in it["targets"] + it.get("outdated", [])] for it in items]
        lls = lm.choice_loglikelihoods(list(zip(prompts, conts)))
        out = np.zeros((len(items), 4))
        records = []
        for n, (it, raw, cs, ll) in enumerate(zip(items, gens, conts, lls)):
            objs = it["targets"] + it.get("outdated", [])
            scores = np.array(ll, dtype=float)
            if p.length_norm == "token":
                scores = scores / np.array([max(len(c), 1) for c in cs])
            elif p.length_norm == "char":
                scores = scores / np.array([max(len(o), 1) for o in objs])
            k = len(it["targets"])
            old = it.get("outdated", [])
            current, outdated = float(scores[:k].max()), (float(scores[k:].max()) if old else None)
            prefers_outdated = outdated is not None and outdated > current
            g = raw.strip().split("\n")[0].strip()
            right, says_old = states(g, it["targets"], p.match), bool(old) and states(g, old, p.match)
            col0 = float(not prefers_outdated) if old and p.score == "auto" else float(right)
            out[n] = (col0, float(right), float(says_old), float(prefers_outdated))
            records.append(
                {
                    "index": n,
                    "score": col0,
                    "prediction": g,
                    "gold": list(it["targets"]),
                    "outdated": list(old),
                    "label": it.get("label"),
                    "time": it.get("time"),
                    "scored_by": "preference" if old and p.score == "auto" else "generation",
                    "generation": raw,
                    "generation_correct": right,
                    "says_outdated": says_old,
                    "loglikelihoods": {o: float(x) for o, x in zip(objs, ll)},
                    "current_score": current,
                    "outdated_score": outdated,
                    "prefers_outdated": prefers_outdated,
                    "length_norm": p.length_norm,
                }
            )
        return out, records
