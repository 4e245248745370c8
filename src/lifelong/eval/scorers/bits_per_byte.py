"""Bits per byte of held-out text: total NLL (in bits) / total UTF-8 bytes. Unlike perplexity it does not
depend on the tokenizer, so models with different vocabularies compare (Gao et al. 2020, The Pile). Lower is
better; the direction is recorded with the score."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from lifelong.data.formats import document_start
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


@SCORERS.register("bits_per_byte")
class BitsPerByte(Scorer):
    metric = "bits_per_byte"
    unit = "bits/byte"  # a log-scale score already: the metrics use it as it is
    higher_is_better = False
    formats = ("text",)

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        texts = [it["text"] for it in items]
        nll = lm.nll(texts)
        # bytes of the text actually scored: lm.nll scores the document's first max_length - 1 tokens
        out = []
        for (value, _n_tok), t in zip(nll, texts):
            ids = lm.tok(t, add_special_tokens=False)["input_ids"]
            ctx, cont = lm.document(t)
            covered = len(cont) + (0 if document_start(lm.tok) else len(ctx))  # no start token: ctx = ids[:1]
            scored = t if covered >= len(ids) else lm.tok.decode(ids[:covered], skip_special_tokens=True)
            out.append([value, max(len(scored.encode("utf-8")), 1)])
        stats = np.array(out, dtype=float).reshape(-1, 2)
        return stats, [
            {"index": i, "score": v / (math.log(2) * b), "nll": v, "tokens": int(n), "bytes": int(b)}
            for i, ((v, b), (_, n)) in enumerate(zip(stats, nll))
        ]

    @staticmethod
    def aggregate(stats: np.ndarray) -> np.ndarray:
        return stats[..., 0].sum(axis=-1) / (math.log(2) * np.maximum(stats[..., 1].sum(axis=-1), 1))
