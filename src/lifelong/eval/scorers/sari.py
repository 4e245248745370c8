"""SARI (Xu et al. 2016, "Optimizing Statistical Machine Translation for Text Simplification", TACL) of the greedy
generation against the item's source and references: for n-grams of order 1 to 4, the F1 of the n-grams the
output adds (not in the source; good when a reference has them), the F1 of those it keeps (weighted by how many
references keep them) and the precision of those it deletes (good when the references delete them too), each
averaged over the four orders, then the three averaged; in percent.

The matrix's score is sentence-level SARI averaged over the examples: the convention of the authors' released
SARI.py as ported to Tensor2Tensor and to Hugging Face `evaluate` (metric `sari`, which TRACE scores its
simplification task with), including that port's two choices: 0/0 counts as 1 (an output that matches exactly
scores full marks) and keep recall counts kept n-grams over all reference-kept n-grams (cocoxu/simplification
issue 6). Text is lower-cased and tokenized with sacrebleu's 13a tokenizer first, as both `evaluate` and EASSE do.
Being an average of per-example scores it resamples exactly in the bootstrap.

Beside it (`also_reported`): the averaged add, keep and delete components, and `sari_corpus`, EASSE's corpus-level
SARI (Alva-Manchego et al. 2019, `easse.sari.corpus_sari` with its defaults: n-gram counts summed over the corpus,
precision / recall / F1 per order and operation, deletion scored by F1, orders averaged), computed from the
per-example counts each row carries. We implement SARI here rather than call a library: no maintained package
on PyPI provides it (torchmetrics has none, `evaluate` fetches its script from the Hugging Face hub at run time,
EASSE is not on PyPI); tests/test_scenario_summarization.py checks both numbers against values those two reference
implementations computed on the same items (docs/decisions.md, "SARI")."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers._greedy import answer_text, generations, need
from lifelong.eval.scorers.base import Scorer

ORDERS = 4
OPS = ("add", "keep", "del")
COUNTS = 9
"""Per order: add (correct, system, reference), keep (...), delete (...): EASSE's n-gram statistics."""
HEAD = 4
"""Columns before the counts: sentence SARI, its add, keep and delete components."""


class SariParams(Strict):
    lowercase: bool = True
    """Lower-case source, output and references before tokenizing."""
    tokenize: Literal["13a", "intl", "none"] = "13a"
    """sacrebleu tokenizer applied before n-grams are taken (`none`: split on spaces only)."""
    max_new_tokens: int = Field(default=64, ge=1, le=65536)
    """Generation budget per example."""
    first_line: bool = True
    """Score only the first non-blank line of the generation."""


def tokenizer(name: str) -> Any:
    """sacrebleu's tokenizer `name` as a callable str -> str (`none`: the identity)."""
    if name == "none":
        return lambda s: s
    if name == "13a":
        return need("sacrebleu.tokenizers.tokenizer_13a", "sari").Tokenizer13a()
    return need("sacrebleu.tokenizers.tokenizer_intl", "sari").TokenizerV14International()


def ngrams(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def scaled(c: Counter, k: int) -> Counter:
    return Counter({g: v * k for g, v in c.items()})


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p > 0 or r > 0 else 0.0


def sentence_order(src: list[str], out: list[str], refs: list[list[str]]) -> tuple[float, float, float]:
    """(add F1, keep F1, delete precision) of one n-gram order, the released definition (evaluate's port)."""
    k = len(refs)
    ref_all = Counter(g for r in refs for g in r)
    s, o = scaled(Counter(src), k), scaled(Counter(out), k)
    kept = s & o
    kept_good = kept & ref_all
    kept_refs = s & ref_all
    p_keep = sum(kept_good[g] / kept[g] for g in kept_good) / len(kept) if kept else 1.0
    r_keep = sum(kept_good.values()) / sum(kept_refs.values()) if kept_refs else 1.0
    deleted = s - o
    deleted_good = deleted - ref_all
    p_del = sum(deleted_good[g] / deleted[g] for g in deleted_good) / len(deleted) if deleted else 1.0
    added = set(out) - set(src)
    added_refs = set(ref_all) - set(src)
    good = len(added & set(ref_all))
    p_add = good / len(added) if added else 1.0
    r_add = good / len(added_refs) if added_refs else 1.0
    return f1(p_add, r_add), f1(p_keep, r_keep), p_del


def sentence_sari(src: str, out: str, refs: list[str]) -> tuple[float, float, float, float]:
    """(SARI, add, keep, delete) in [0, 1] of normalised (tokenized, space-joined) strings. Tokens are split on
    single spaces as the released script does (an empty output is one empty token there)."""
    s1, o1, r1 = src.split(" "), out.split(" "), [r.split(" ") for r in refs]
    per = [sentence_order(ngrams(s1, n), ngrams(o1, n), [ngrams(r, n) for r in r1]) for n in range(1, ORDERS + 1)]
    add, keep, dele = (sum(x[i] for x in per) / ORDERS for i in range(3))
    return (add + keep + dele) / 3, add, keep, dele


def corpus_counts(src: str, out: str, refs: list[str]) -> list[float]:
    """EASSE's n-gram statistics of one example (ORDERS x COUNTS, flattened), summable over a corpus."""
    row: list[float] = []
    k = len(refs)
    s_tok, o_tok, r_tok = src.split(), out.split(), [r.split() for r in refs]
    for n in range(1, ORDERS + 1):
        s, o = Counter(ngrams(s_tok, n)), Counter(ngrams(o_tok, n))
        r: Counter = Counter()
        for t in r_tok:
            r.update(ngrams(t, n))
        added, ref_added = set(o) - set(s), set(r) - set(s)
        sk, ok = scaled(s, k), scaled(o, k)
        keep_sys, keep_ref = sk & ok, sk & r
        del_sys, del_ref = sk - ok, sk - r
        row += [len(added & set(r)), len(added), len(ref_added)]
        row += [sum((keep_sys & keep_ref).values()), sum(keep_sys.values()), sum(keep_ref.values())]
        row += [sum((del_sys & del_ref).values()), sum(del_sys.values()), sum(del_ref.values())]
    return row


def corpus_sari(counts: np.ndarray) -> np.ndarray:
    """EASSE's corpus SARI (macro over orders, deletion by F1) in percent from summed counts (..., ORDERS*COUNTS)."""
    c = counts.reshape(counts.shape[:-1] + (ORDERS, 3, 3))  # order, operation, (correct, system, reference)
    correct, system, ref = c[..., 0], c[..., 1], c[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(system > 0, correct / np.where(system > 0, system, 1), 0.0)
        r = np.where(ref > 0, correct / np.where(ref > 0, ref, 1), 0.0)
        f = np.where((p > 0) & (r > 0), 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    return 100.0 * f.mean(axis=-2).mean(axis=-1)  # orders averaged per operation, then the three operations


@SCORERS.register("sari")
class Sari(Scorer):
    Params = SariParams
    metric = "sari"
    formats = ("simplification",)

    def also_reported(self) -> tuple[str, ...]:
        return ("sari_add", "sari_keep", "sari_del", "sari_corpus")

    @classmethod
    def also_aggregate(cls, stats: np.ndarray, k: int) -> float:
        if k < 3:
            return float(100.0 * stats[..., k + 1].mean(axis=-1))
        return float(corpus_sari(stats[..., HEAD:].sum(axis=-2)))

    def signature(self) -> Optional[str]:
        p: SariParams = self.params  # type: ignore[assignment]
        return f"sari|sentence-mean|n:{ORDERS}|tok:{p.tokenize}|lc:{'yes' if p.lowercase else 'no'}|0/0:1"

    def stats(self, sources: list[str], predictions: list[str], references: list[list[str]]) -> np.ndarray:
        """Statistics (n, 4 + 36): sentence SARI, add, keep, delete (in [0, 1]), then EASSE's counts."""
        p: SariParams = self.params  # type: ignore[assignment]
        tok = tokenizer(p.tokenize)

        def norm(s: str) -> str:
            return str(tok(s.lower() if p.lowercase else s))

        out = np.zeros((len(predictions), HEAD + ORDERS * COUNTS))
        for n, (src, pred, refs) in enumerate(zip(sources, predictions, references)):
            s, o, r = norm(src), norm(pred), [norm(x) for x in refs]
            out[n, :HEAD] = sentence_sari(s, o, r)
            out[n, HEAD:] = corpus_counts(s, o, r)
        return out

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: SariParams = self.params  # type: ignore[assignment]
        missing = next((k for k, it in enumerate(items) if not isinstance(it.get("source"), str)), None)
        if missing is not None:
            raise ValueError(
                f"sari: item {missing} has no 'source'; SARI compares the output with the source, so score "
                "simplification rows (format: simplification, fields source + references)"
            )
        raws = generations(lm, items, p.max_new_tokens)
        preds = [answer_text(r, p.first_line) for r in raws]
        refs = [[str(t) for t in it["targets"]] for it in items]
        out = self.stats([it["source"] for it in items], preds, refs)
        records = [
            {
                "index": n,
                "score": float(100 * out[n, 0]),
                "prediction": preds[n],
                "gold": refs[n],
                "source": items[n]["source"],
                "generation": raws[n],
                **{k: float(100 * out[n, c + 1]) for c, k in enumerate(("add", "keep", "delete"))},
            }
            for n in range(len(items))
        ]
        return out, records
