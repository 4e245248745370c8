"""Scoring matches training (issue 15 item 6): pre-training packing and the perplexity scorer put the same
token before every document (BOS, else EOS), so a document's first token is scored from the context it was
trained after, and a tiny model trained on a language of known entropy scores that entropy."""

import math
import random

import numpy as np
import pytest

from lifelong.data.formats import Formatter, document_start, pack
from lifelong.eval.lm import HFLM
from lifelong.testing import tiny_llama, tiny_tokenizer


def tokenizer(bos: bool):
    tok = tiny_tokenizer()
    if not bos:  # like GPT-NeoX / Qwen: an end-of-text token only
        tok.bos_token = None
    return tok


def contains(stream: list[int], part: list[int]) -> bool:
    return any(stream[i : i + len(part)] == part for i in range(len(stream) - len(part) + 1))


@pytest.mark.parametrize("bos", [True, False])
def test_every_document_is_scored_from_the_context_packing_trains_it_after(bos):
    tok = tokenizer(bos)
    docs = ["abc abd.", "hello there", "x"]
    stream = [i for b in pack(docs, Formatter(tok), block=10_000) for i in b["input_ids"]]
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    if bos:  # <bos> d1 <eos> <bos> d2 <eos> ...
        assert stream == sum(([tok.bos_token_id] + d + [tok.eos_token_id] for d in ids), [])
        assert document_start(tok) == [tok.bos_token_id]
    else:  # <eos> d1 <eos> d2 <eos> ...: the separator is the start, never doubled
        assert stream == [tok.eos_token_id] + sum((d + [tok.eos_token_id] for d in ids), [])
        assert document_start(tok) == [tok.eos_token_id]
    lm = HFLM(tiny_llama(), Formatter(tok))
    for d, i in zip(docs, ids):
        ctx, scored = lm.document(d)
        assert scored == i  # every token of the document is scored, the first one included
        assert contains(stream, ctx + scored)  # from exactly the context training saw


def test_changing_the_tokenized_output_version_retokenizes(tiny_cfg, tmp_path, monkeypatch):
    """Packed examples changed (document starts): their cache keys carry a version, so examples cached by
    older code are not reused."""
    from lifelong.data import cache
    from lifelong.runner import Run

    monkeypatch.setenv("LIFELONG_CACHE", str(tmp_path / "cache"))
    Run(tiny_cfg("naive", n_stages=1, name="v1"), quiet=True)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 1
    monkeypatch.setattr(cache, "TOKENS_VERSION", cache.TOKENS_VERSION + "-next")
    Run(tiny_cfg("naive", n_stages=1, name="v2"), quiet=True)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.json"))) == 2


SYMBOLS = "abcd"
NEXT = {s: {SYMBOLS[(i + 1) % 4]: 0.75, SYMBOLS[(i + 2) % 4]: 0.25} for i, s in enumerate(SYMBOLS)}
"""An order-1 Markov chain over four letters; doubly stochastic, so its stationary distribution is uniform.
Entropy rate H(0.75, 0.25) = 0.562 nats; a document's first letter (uniform) carries ln 4 = 1.386."""
LENGTH = 32  # fixed, so where a document ends is learnable and the unscored EOS takes no probability mass


def markov_docs(rng: random.Random, n: int) -> list[str]:
    docs = []
    for _ in range(n):
        x = [rng.choice(SYMBOLS)]
        while len(x) < LENGTH:
            nxt = list(NEXT[x[-1]])
            x.append(rng.choices(nxt, weights=[NEXT[x[-1]][c] for c in nxt])[0])
        docs.append("".join(x))
    return docs


def true_nll(docs: list[str]) -> float:
    """NLL per token of the documents under the chain that generated them (the floor a model can reach)."""
    total = sum(math.log(4) - sum(math.log(NEXT[a][b]) for a, b in zip(d, d[1:])) for d in docs)
    return total / sum(len(d) for d in docs)


def test_a_model_trained_on_a_known_language_scores_its_entropy(tmp_path):
    """Before document starts matched, this read 0.716 nats/token against a floor of 0.595 (first letters
    scored at 3.5 nats from a BOS training never showed); now the scorer reads the floor."""
    from lifelong.runner import Run
    from lifelong.validation import validate_raw

    rng = random.Random(0)
    train, held_out = markov_docs(rng, 3000), markov_docs(rng, 200)
    raw = {
        "name": "markov",
        "output_dir": str(tmp_path / "runs"),
        "torch_threads": 1,
        "model": {"tiny": "llama"},
        "train": {
            "lr": 1e-2,
            "batch_size": 16,
            "max_steps": 300,
            "max_length": 64,
            "schedule": "cosine",
            "warmup_steps": 20,
        },
        "eval": {"bootstrap": 0, "batch_size": 64},
        "stages": [
            {
                "name": "markov",
                "kind": "pretrain",
                "data": {"rows": [{"text": d} for d in train]},
                "eval": {"rows": [{"text": d} for d in held_out]},
            }
        ],
    }
    run = Run(validate_raw(raw), quiet=True)
    res = run.execute()
    stats = np.array(res.stats["markov"]["markov"])  # the perplexity scorer's [NLL, tokens] per document
    nll = stats[:, 0].sum() / stats[:, 1].sum()
    floor = true_nll(held_out)
    assert res.matrix[1][0] == pytest.approx(math.exp(nll))
    assert floor - 0.01 < nll < floor + 0.02, (nll, floor)
    # the first letter of each document, scored the scorer's way, carries the entropy of a uniform letter
    lm = HFLM(run.model.eval(), run.formatter)
    firsts = lm.loglikelihood([(lm.document(d)[0], lm.document(d)[1][:1]) for d in held_out])
    assert -np.mean([lp for lp, _ in firsts]) == pytest.approx(math.log(4), abs=0.1)
