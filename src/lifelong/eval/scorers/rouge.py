"""ROUGE (Lin 2004) of the greedy generation against the reference(s), by Google's `rouge-score` package: per
example the F-measure of `variant` against the best reference (rouge-score's `score_multi`: the reference with the
highest F-measure, per variant), averaged over examples, in percent. rouge-score's default tokenizer: lower case,
every character other than a-z and 0-9 a separator (so text in other scripts has no tokens: use it on English),
Porter stemming of tokens longer than 3 characters with `use_stemmer`. `rougeLsum` is the summary-level LCS over
sentences written one per line (keep `first_line: false` for multi-line summaries).

Statistics per example: F, precision and recall of `variant`, then the F-measures of the three other variants, so
the matrix shows `variant` and `also_reported` names the rest (`<variant>_precision`, `<variant>_recall`, and
the others' F-measures) beside it."""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations, need
from lifelong.eval.scorers.base import Scorer

VARIANTS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class RougeParams(Strict):
    variant: Literal["rouge1", "rouge2", "rougeL", "rougeLsum"] = "rougeL"
    """The ROUGE variant of the matrix (the metric is named after it): unigram, bigram overlap, longest common
    subsequence, or summary-level LCS over newline-separated sentences."""
    use_stemmer: bool = False
    """Porter-stem tokens before matching (rouge-score's `use_stemmer`; its default is off)."""
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example."""
    first_line: bool = True
    """Score only the first non-blank line of the generation."""


@SCORERS.register("rouge")
class Rouge(Scorer):
    Params = RougeParams
    metric = "rougeL"
    formats = ("prompt_response", "messages")

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        p: RougeParams = self.params  # type: ignore[assignment]
        self.metric = p.variant  # type: ignore[misc]
        self.others = [v for v in VARIANTS if v != p.variant]

    def also_reported(self) -> tuple[str, ...]:
        v = self.metric
        return (f"{v}_precision", f"{v}_recall", *self.others)

    def signature(self) -> Optional[str]:
        import importlib.metadata as md

        p: RougeParams = self.params  # type: ignore[assignment]
        try:
            version = md.version("rouge-score")
        except md.PackageNotFoundError:
            version = "?"
        stem = "porter" if p.use_stemmer else "none"
        return f"rouge-score {version}|{p.variant}|stemmer:{stem}|tokenizer:default|best-of-refs:fmeasure"

    def rouge_scorer(self) -> Any:
        p: RougeParams = self.params  # type: ignore[assignment]
        rs = need("rouge_score.rouge_scorer", "rouge")
        return rs.RougeScorer(list(VARIANTS), use_stemmer=p.use_stemmer)

    def stats(self, predictions: list[str], references: list[list[str]]) -> np.ndarray:
        """Statistics (n, 6) of predictions against their references: F, P, R of the variant, the others' F."""
        scorer = self.rouge_scorer()
        out = np.zeros((len(predictions), 3 + len(self.others)))
        for n, (pred, refs) in enumerate(zip(predictions, references)):
            s = scorer.score_multi(refs, pred)
            main = s[self.metric]
            out[n, :3] = (main.fmeasure, main.precision, main.recall)
            out[n, 3:] = [s[v].fmeasure for v in self.others]
        return out

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: RougeParams = self.params  # type: ignore[assignment]
        raws = generations(lm, items, p.max_new_tokens)
        preds = [answer_text(r, p.first_line) for r in raws]
        refs = [[str(t) for t in it["targets"]] for it in items]
        out = self.stats(preds, refs)
        names = (self.metric, *self.also_reported())
        records = [
            {
                "index": n,
                "score": float(100 * out[n, 0]),
                "prediction": preds[n],
                "gold": refs[n],
                "generation": raws[n],
                **{k: float(100 * out[n, c]) for c, k in enumerate(names) if c},
            }
            for n in range(len(items))
        ]
        return out, records
