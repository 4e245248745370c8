"""BLEU of greedy translations, corpus level, via sacrebleu (Papineni et al. 2002, "BLEU: a Method for Automatic
Evaluation of Machine Translation"; Post 2018, "A Call for Clarity in Reporting BLEU Scores"), with chrF
(Popovic 2015; sacrebleu's defaults, the same case setting) reported beside it.

Per-example statistics are sacrebleu's own per-sentence statistics (hypothesis length, closest reference length,
matched and total n-grams per order, clipped against the references' maximum counts) after a 3-column header
(n-gram order, smoothing method, smoothing value) that tells `aggregate` how to read them, followed by a chrF
block (`chrf.py`). `aggregate` sums the rows and calls `sacrebleu.BLEU.compute_bleu` on the sums, so the task's
score is corpus BLEU (not a mean of sentence BLEUs) and a bootstrap resample of rows is corpus BLEU of the
resampled corpus, equal to `sacrebleu.corpus_bleu` on it (tests/test_scenario_translation.py). Every smoothing
method of sacrebleu is applied as sacrebleu applies it, since the header carries it to `aggregate`."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers import chrf as chrf_block
from lifelong.eval.scorers._greedy import need
from lifelong.eval.scorers.base import Scorer

HEAD = 3
"""Header columns of a BLEU block: max n-gram order, smoothing method (index in SMOOTHING), smoothing value (NaN:
sacrebleu's default for the method)."""
SMOOTHING = ("none", "floor", "add-k", "exp")


class BleuParams(Strict):
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example (greedy)."""
    first_line: bool = True
    """Score only the first line of the generation."""
    tokenize: Literal["13a", "intl", "char", "zh", "none"] = "13a"
    """sacrebleu's tokenizer: `13a` (mteval-v13a, the default), `intl` (Unicode punctuation and symbols),
    `char` (characters, for languages without spaces), `zh` (Chinese), `none` (text already tokenized)."""
    lowercase: bool = False
    """Case-insensitive BLEU (and chrF beside it)."""
    smooth_method: Literal["exp", "floor", "add-k", "none"] = "exp"
    """sacrebleu's smoothing (Chen and Cherry 2014); `exp` is sacrebleu's default for corpus BLEU."""
    smooth_value: Optional[float] = Field(default=None, ge=0, le=100)
    """Value for `floor` (default 0.1) and `add-k` (default 1)."""
    max_ngram_order: int = Field(default=4, ge=1, le=8)
    """Highest n-gram order (BLEU-4 by default)."""


def metric(p: BleuParams) -> Any:
    """A sacrebleu BLEU with the parameters of `p`."""
    sb = need("sacrebleu.metrics.bleu", "bleu")
    return sb.BLEU(
        lowercase=p.lowercase,
        tokenize=p.tokenize,
        smooth_method=p.smooth_method,
        smooth_value=p.smooth_value,
        max_ngram_order=p.max_ngram_order,
        force=True,
    )


def block(m: Any, hyps: list[str], refs: list[list[str]]) -> np.ndarray:
    """The BLEU statistics of each (hypothesis, references): header + sacrebleu's per-sentence statistics
    `[hyp_len, ref_len, correct_1..N, total_1..N]`."""
    stats = m._extract_corpus_statistics(hyps, chrf_block.streams(refs)) if hyps else []
    value = math.nan if m.smooth_value is None else float(m.smooth_value)
    out = np.zeros((len(hyps), HEAD + 2 + 2 * m.max_ngram_order))
    for n, s in enumerate(stats):
        out[n, :HEAD] = [m.max_ngram_order, SMOOTHING.index(m.smooth_method), value]
        out[n, HEAD:] = s
    return out


def width(stats: np.ndarray) -> int:
    """Columns of the BLEU block at the start of `stats` (read from its header)."""
    return HEAD + 2 + 2 * int(stats.reshape(-1, stats.shape[-1])[0, 0])


def corpus(stats: np.ndarray) -> np.ndarray:
    """Corpus BLEU from a BLEU block (..., n, k) -> (...), by `sacrebleu.BLEU.compute_bleu` on the summed
    statistics."""
    stats = np.asarray(stats, dtype=float)
    lead = stats.shape[:-2]
    if stats.shape[-2] == 0:
        return np.full(lead, np.nan)
    order, method, value = stats.reshape(-1, stats.shape[-1])[0, :HEAD]
    n = int(order)
    sb = need("sacrebleu.metrics.bleu", "bleu")
    sums = stats[..., HEAD : HEAD + 2 + 2 * n].sum(axis=-2).reshape(-1, 2 + 2 * n)
    out = []
    for row in sums:
        c = [int(round(x)) for x in row]
        out.append(
            sb.BLEU.compute_bleu(
                correct=c[2 : 2 + n],
                total=c[2 + n :],
                sys_len=c[0],
                ref_len=c[1],
                smooth_method=SMOOTHING[int(method)],
                smooth_value=None if math.isnan(value) else float(value),
                effective_order=False,
                max_ngram_order=n,
            ).score
        )
    return np.asarray(out, dtype=float).reshape(lead)


@SCORERS.register("bleu")
class Bleu(Scorer):
    Params = BleuParams
    metric = "bleu"
    formats = ("translation", "prompt_response", "messages")

    def also_reported(self) -> tuple[str, ...]:
        """chrF (sacrebleu's defaults: character 6-grams, beta 2) of the same generations."""
        return ("chrf",)

    @classmethod
    def also_aggregate(cls, stats: np.ndarray, k: int) -> float:
        return float(chrf_block.corpus(np.asarray(stats, dtype=float)[..., width(stats) :]))

    def chrf_params(self) -> chrf_block.ChrFParams:
        return chrf_block.ChrFParams(lowercase=self.params.lowercase)  # type: ignore[attr-defined]

    def signature(self) -> Optional[str]:
        m = metric(self.params)  # type: ignore[arg-type]
        m.num_refs = 1
        sig = m.get_signature()
        sig.update("nrefs", None)  # references are counted per item (a task may mix 1 and 3)
        return f"BLEU|{sig.format()} ; {chrf_block.signature(chrf_block.metric(self.chrf_params()))}"

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return corpus(stats)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: BleuParams = self.params  # type: ignore[assignment]
        raws, hyps, refs = chrf_block.translations(lm, items, p)
        bleu = block(metric(p), hyps, refs)
        chrf = chrf_block.block(chrf_block.metric(self.chrf_params()), hyps, refs)
        records = [
            {  # score: the sentence alone as a corpus (no effective order)
                **chrf_block.record(n, float(corpus(bleu[n : n + 1])), raws, hyps, refs, it),
                "chrf": float(chrf_block.corpus(chrf[n : n + 1])),
            }
            for n, it in enumerate(items)
        ]
        return np.concatenate([bleu, chrf], axis=1), records
