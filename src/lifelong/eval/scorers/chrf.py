"""chrF and chrF++ of greedy translations, corpus level, via sacrebleu (Popovic 2015, "chrF: character n-gram
F-score for automatic MT evaluation"; Popovic 2017, "chrF++: words helping character n-grams"; Post 2018, "A Call
for Clarity in Reporting BLEU Scores").

Per-example statistics are sacrebleu's own per-sentence statistics (hypothesis, reference and matched n-gram
counts per character and word order, from the best-matching reference), after a 4-column header (char order,
word order, beta, eps smoothing) that tells `aggregate` how to read them; `aggregate` sums the rows and computes
the corpus chrF from the sums with sacrebleu, so a bootstrap resamples sentences and every resample is a corpus
chrF, exactly what `sacrebleu.corpus_chrf` gives on the resampled corpus (tests/test_scenario_translation.py)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations, need
from lifelong.eval.scorers.base import Scorer

HEAD = 4
"""Header columns of a chrF block: char order, word order, beta, eps smoothing (0/1)."""


class ChrFParams(Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example (greedy)."""
    first_line: bool = True
    """Score only the first line of the generation."""
    char_order: int = Field(default=6, ge=1, le=12)
    """Character n-gram order (sacrebleu's default 6)."""
    word_order: int = Field(default=0, ge=0, le=6)
    """Word n-gram order: 0 is chrF, 2 is chrF++."""
    beta: int = Field(default=2, ge=1, le=10)
    """Weight of recall against precision (chrF2: beta 2)."""
    lowercase: bool = False
    """Case-insensitive."""
    whitespace: bool = False
    """Keep whitespace in character n-grams."""
    eps_smoothing: bool = False
    """sacrebleu's `eps_smoothing` (the chrF++.py / Moses / NLTK smoothing); off: sacrebleu's default."""


def metric(p: Any) -> Any:
    """A sacrebleu CHRF with the parameters of `p` (a ChrFParams or anything with those fields)."""
    sb = need("sacrebleu.metrics.chrf", "chrf")
    return sb.CHRF(
        char_order=p.char_order,
        word_order=p.word_order,
        beta=p.beta,
        lowercase=p.lowercase,
        whitespace=p.whitespace,
        eps_smoothing=p.eps_smoothing,
    )


def streams(refs: list[list[str]]) -> list[list[Optional[str]]]:
    """Per-item reference lists as sacrebleu's reference streams (stream j holds every item's j-th reference,
    None where an item has fewer)."""
    width = max((len(r) for r in refs), default=0)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(width)]


def block(m: Any, hyps: list[str], refs: list[list[str]]) -> np.ndarray:
    """The chrF statistics of each (hypothesis, references): header + sacrebleu's per-sentence statistics."""
    stats = m._extract_corpus_statistics(hyps, streams(refs)) if hyps else []
    head = [m.char_order, m.word_order, m.beta, float(m.eps_smoothing)]
    out = np.zeros((len(hyps), HEAD + 3 * (m.char_order + m.word_order)))
    for n, s in enumerate(stats):
        out[n, :HEAD] = head
        out[n, HEAD:] = s
    return out


def width(stats: np.ndarray) -> int:
    """Columns of the chrF block at the start of `stats` (read from its header)."""
    first = stats.reshape(-1, stats.shape[-1])[0]
    return HEAD + 3 * int(first[0] + first[1])


def corpus(stats: np.ndarray) -> np.ndarray:
    """Corpus chrF from a chrF block (..., n, k) -> (...), by sacrebleu from the summed statistics."""
    stats = np.asarray(stats, dtype=float)
    lead = stats.shape[:-2]
    if stats.shape[-2] == 0:
        return np.full(lead, np.nan)
    nc, nw, beta, eps = (stats.reshape(-1, stats.shape[-1])[0, k] for k in range(HEAD))
    sb = need("sacrebleu.metrics.chrf", "chrf")
    m = sb.CHRF(char_order=int(nc), word_order=int(nw), beta=int(beta), eps_smoothing=bool(eps))
    sums = stats[..., HEAD : HEAD + 3 * int(nc + nw)].sum(axis=-2).reshape(-1, 3 * int(nc + nw))
    out = [m._compute_score_from_stats([int(round(x)) for x in row]).score for row in sums]
    return np.asarray(out, dtype=float).reshape(lead)


def translations(lm: Any, items: list[dict], p: Any) -> tuple[list[str], list[str], list[list[str]]]:
    """Greedy generations of `items` (budget `p.max_new_tokens`), the scored text of each (`p.first_line`) and
    each item's references: what BLEU and chrF both score."""
    raws = generations(lm, items, p.max_new_tokens)
    return raws, [answer_text(r, p.first_line) for r in raws], [[str(t) for t in it["targets"]] for it in items]


def record(n: int, score: float, raws: list[str], hyps: list[str], refs: list[list[str]], item: dict) -> dict:
    """The audit record of item `n`: its own score, the scored text, the references, the generation, and its
    pair and source when the item has them."""
    return {
        "index": n,
        "score": score,
        "prediction": hyps[n],
        "gold": refs[n],
        "generation": raws[n],
        **{k: item[k] for k in ("pair", "source") if k in item},
    }


def signature(m: Any) -> str:
    """sacrebleu's signature of a chrF metric without the number of references (known per item only)."""
    m.num_refs = 1
    sig = m.get_signature()
    sig.update("nrefs", None)
    name = need("sacrebleu.metrics.chrf", "chrf").CHRFScore(0.0, m.char_order, m.word_order, m.beta).name
    return f"{name}|{sig.format()}"


@SCORERS.register("chrf")
class ChrF(Scorer):
    Params = ChrFParams
    metric = "chrf"
    formats = ("translation", "prompt_response", "messages")

    def signature(self) -> Optional[str]:
        return signature(metric(self.params))

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return corpus(stats)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: ChrFParams = self.params  # type: ignore[assignment]
        raws, hyps, refs = translations(lm, items, p)
        out = block(metric(p), hyps, refs)
        # each record's score: the sentence's own chrF
        records = [record(n, float(corpus(out[n : n + 1])), raws, hyps, refs, it) for n, it in enumerate(items)]
        return out, records
