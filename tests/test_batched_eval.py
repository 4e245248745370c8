"""Batched scoring across items (issue 16 item 2): every scorer gives the same per-example statistics and
audit records at batch size 1 and 16 on items of varied lengths, the shared-prompt path equals plain
full-sequence forwards, and batched greedy generation gives the texts each context gives alone."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from lifelong.data import Formatter
from lifelong.eval.lm import HFLM, shares_prompt
from lifelong.eval.scorers import SCORERS
from lifelong.testing import tiny_gpt2, tiny_llama, tiny_tokenizer

RNG_WORDS = ["ab", "cde", "f", "abcdef", "dd", "e", "bca", "fed"]


def _phrase(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(RNG_WORDS) for _ in range(rng.randint(lo, hi)))


def _items(seed: int = 0) -> dict[str, list[dict]]:
    """Items of every format with prompts, options and texts of varied lengths (1 to ~60 characters)."""
    rng = random.Random(seed)
    choice = []
    for _ in range(21):
        k = rng.randint(2, 5)
        opts = [_phrase(rng, 1, 4) for _ in range(k)]
        choice.append({"prompt": _phrase(rng, 1, 12), "options": opts, "answer": rng.randrange(k)})
    choice.append({"prompt": "q", "options": ["a", "b"], "answer": 1})  # one-token options: first logits only
    pref = [
        {"prompt": _phrase(rng, 1, 10), "chosen": _phrase(rng, 1, 5), "rejected": _phrase(rng, 1, 5)} for _ in range(19)
    ]
    text = [{"text": _phrase(rng, 1, 20)} for _ in range(17)]
    gen = [{"prompt": _phrase(rng, 1, 12), "targets": [rng.choice(RNG_WORDS)]} for _ in range(18)]
    news = [_phrase(rng, 1, 2) for _ in range(12)]
    edit = [
        {
            "prompt": "The " + _phrase(rng, 0, 3) + " of {} is",
            "subject": rng.choice(RNG_WORDS),
            "target_new": new,
            "target_true": new + " " + rng.choice(RNG_WORDS),
            "paraphrases": [_phrase(rng, 1, 6) for _ in range(rng.randint(0, 2))],
            "neighborhood": [
                {"prompt": _phrase(rng, 1, 5), "target": _phrase(rng, 1, 2)} for _ in range(rng.randint(0, 2))
            ],
        }
        for new in news
    ]
    return {"choice": choice, "preference": pref, "text": text, "gen": gen, "edit": edit}


CASES = [  # (scorer, params, which items)
    ("choice", {}, "choice"),
    ("choice", {"length_norm": "token"}, "choice"),
    ("choice", {"length_norm": "char"}, "choice"),
    ("preference_accuracy", {}, "preference"),
    ("preference_margin", {}, "preference"),
    ("perplexity", {}, "text"),
    ("bits_per_byte", {}, "text"),
    ("exact_match", {"max_new_tokens": 6}, "gen"),
    ("exact_match", {"max_new_tokens": 5, "match": "contains", "first_line": False}, "gen"),
    ("edit", {"metric": "efficacy", "variant": "top1"}, "edit"),
    ("edit", {"metric": "generalization", "variant": "cf_prob"}, "edit"),
    ("edit", {"metric": "locality", "variant": "cf_prob"}, "edit"),
]


def _numbers(rec: dict) -> dict[str, Any]:
    return {
        k: v for k, v in rec.items() if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float))
    }


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_every_scorer_is_the_same_at_batch_size_1_and_16(make):
    torch.manual_seed(0)
    model = make(seed=4).eval()
    fm = Formatter(tiny_tokenizer())
    items = _items()
    for name, params, which in CASES:
        cls = SCORERS.get(name)
        scorer = cls(cls.Params(**params))
        s1, d1 = scorer.score_details(HFLM(model, fm, batch_size=1), items[which])
        s16, d16 = scorer.score_details(HFLM(model, fm, batch_size=16), items[which])
        assert s1.shape == s16.shape and len(s1) > 0, name
        np.testing.assert_allclose(s1, s16, atol=1e-5, rtol=0, err_msg=f"{name} {params}")
        assert d1 is not None and d16 is not None and len(d1) == len(s1) == len(d16)
        for a, b in zip(d1, d16):
            na, nb = _numbers(a), _numbers(b)
            assert {k: v for k, v in a.items() if k not in na} == {k: v for k, v in b.items() if k not in nb}, name
            for k in na:  # log-likelihoods, margins, NLLs to 1e-5; predictions, texts, ids above: exactly
                np.testing.assert_allclose(na[k], nb[k], atol=1e-5, rtol=0, err_msg=f"{name} {k}")
        assert float(scorer.aggregate(s1)) == pytest.approx(float(scorer.aggregate(s16)), abs=1e-4)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_shared_prompt_batches_equal_plain_forwards_of_each_full_sequence(make):
    """Padding changes no log-likelihood: every option of every item, scored in batches of 16 prompts with
    options from the padded KV cache, equals a forward of its own unpadded sequence."""
    model = make(seed=5).eval()
    fm = Formatter(tiny_tokenizer())
    reqs = [
        (fm.prompt_ids(it["prompt"]), [fm.response_ids(o, eos=False) for o in it["options"]])
        for it in _items(1)["choice"]
    ]
    shared = sum(shares_prompt(len(c), [len(o) for o in opts]) for c, opts in reqs)
    assert 0 < shared < len(reqs)  # both paths: prompts from the padded cache, and full sequences
    got = HFLM(model, fm, batch_size=16).choice_loglikelihoods(reqs)
    for (ctx, conts), lls in zip(reqs, got):
        for cont, ll in zip(conts, lls):
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
            direct = sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(cont))
            assert ll == pytest.approx(direct, abs=1e-5)


def test_cost_rule_shares_long_prompts_and_not_single_continuations():
    assert shares_prompt(40, [1, 1, 1, 1])  # 43 positions instead of 164
    assert shares_prompt(10, [3, 5])
    assert not shares_prompt(40, [7])  # one continuation (perplexity): a plain sequence
    assert not shares_prompt(1, [1, 30])  # a 1-token prompt, a long option: 59 padded positions > 33


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_batched_greedy_generation_gives_the_texts_of_batch_size_1(make):
    model = make(seed=6).eval()
    fm = Formatter(tiny_tokenizer())
    ctxs = [fm.prompt_ids(it["prompt"]) for it in _items(2)["gen"]]
    single = HFLM(model, fm, batch_size=1).generate(ctxs, max_new_tokens=8)
    batched = HFLM(model, fm, batch_size=16).generate(ctxs, max_new_tokens=8)
    assert batched == single
    assert len(set(single)) > 3  # the texts differ between contexts: the comparison can fail


def test_generation_stops_at_the_first_end_of_sequence_token():
    """A row that ends early is padded by the batch afterwards; none of that reaches its text."""
    tok = tiny_tokenizer()
    model = tiny_llama(seed=6).eval()
    fm = Formatter(tok)
    lm = HFLM(model, fm, batch_size=4)
    ctxs = [fm.prompt_ids(p) for p in ("ab", "a much longer prompt than that")]
    free = lm.generate(ctxs, max_new_tokens=6)
    first = tok(free[0], add_special_tokens=False)["input_ids"][0]
    model.generation_config.eos_token_id = first  # now the first generated token of context 0 ends it
    assert lm.generate(ctxs, max_new_tokens=6)[0] == ""
