import numpy as np
import pytest
import torch

from lifelong.data import Formatter
from lifelong.eval.lm import HFLM
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.exact_match import normalize
from lifelong.testing import tiny_gpt2, tiny_llama, tiny_tokenizer


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_cached_prompt_choice_scoring_equals_full_sequence_scoring(make):
    model = make(seed=1).eval()
    lm = HFLM(model, Formatter(tiny_tokenizer()), batch_size=3)
    ctx = lm.fm.prompt_ids("t0 abc? is it")
    conts = [lm.fm.response_ids(o, eos=False) for o in ("yes", "no", "maybe not")]
    cached = lm.choice_loglikelihood(ctx, conts)
    full = [lp for lp, _ in lm.loglikelihood([(ctx, c) for c in conts])]
    assert cached == pytest.approx(full, abs=1e-4)
    # and against a direct computation
    ids = torch.tensor([ctx + conts[2]])
    logp = torch.log_softmax(model(ids).logits[0], -1)
    direct = sum(float(logp[len(ctx) - 1 + k, t]) for k, t in enumerate(conts[2]))
    assert full[2] == pytest.approx(direct, abs=1e-4)


def test_choice_scorer_picks_the_likelier_option_and_length_norm():
    class FakeLM:
        fm = Formatter(tiny_tokenizer())

        def choice_loglikelihoods(self, reqs):
            return [[-1.0 * len(c) for c in conts] for _, conts in reqs]  # -1 per token

    items = [
        {"prompt": "p", "options": ["a", "bbbbbb"], "answer": 0},
        {"prompt": "p", "options": ["a", "bbbbbb"], "answer": 1},
    ]
    scorer = SCORERS.get("choice")()
    stats = scorer.score(FakeLM(), items)
    assert stats[:, 0].tolist() == [1.0, 0.0]
    assert scorer.aggregate(stats) == 50.0


def test_exact_match_normalization():
    assert normalize("The  Paris!") == "paris"
    assert normalize("an Apple.") == "apple"


def test_perplexity_aggregate_is_token_weighted_and_lower_is_better():
    cls = SCORERS.get("perplexity")
    stats = np.array([[2.0, 1.0], [4.0, 3.0]])
    assert cls.aggregate(stats) == pytest.approx(np.exp(6.0 / 4.0))
    assert cls.higher_is_better is False


def test_perplexity_matches_model_loss():
    model = tiny_llama(seed=2).eval()
    tok = tiny_tokenizer()
    lm = HFLM(model, Formatter(tok))
    text = "hello there"
    ((nll, n),) = lm.nll([text])
    ids = torch.tensor([[tok.bos_token_id] + tok(text)["input_ids"]])
    loss = model(ids, labels=ids).loss
    assert n == len(text) and nll / n == pytest.approx(float(loss), abs=1e-4)


def test_generation_is_greedy_and_batched_like_single():
    model = tiny_llama(seed=3).eval()
    lm = HFLM(model, Formatter(tiny_tokenizer()), batch_size=4)
    ctxs = [lm.fm.prompt_ids(p) for p in ("ab", "a longer prompt", "xyz")]
    batched = lm.generate(ctxs, max_new_tokens=5)
    single = [lm.generate([c], max_new_tokens=5)[0] for c in ctxs]
    assert batched == single


def test_bits_per_byte_is_nll_in_bits_over_bytes():
    import math

    model = tiny_llama(seed=2).eval()
    lm = HFLM(model, Formatter(tiny_tokenizer()))
    cls = SCORERS.get("bits_per_byte")
    stats = cls().score(lm, [{"text": "héllo there"}, {"text": "abc"}])
    (n1, _), (n2, _) = lm.nll(["héllo there", "abc"])
    assert stats[:, 1].tolist() == [12.0, 3.0]  # UTF-8 bytes (é is 2)
    assert cls.aggregate(stats) == pytest.approx((n1 + n2) / (math.log(2) * 15))
    assert cls.higher_is_better is False


def test_exact_match_contains_mode():
    from lifelong.eval.scorers.exact_match import ExactMatch, ExactMatchParams

    class FakeLM:
        fm = Formatter(tiny_tokenizer())

        def generate(self, ctxs, max_new_tokens=32):
            return ["The capital is Quux.", "Quuxville it is"]

    items = [{"prompt": "a", "targets": ["Quux"]}, {"prompt": "b", "targets": ["Quux"]}]
    stats = ExactMatch(ExactMatchParams(match="contains")).score(FakeLM(), items)
    assert stats[:, 0].tolist() == [1.0, 0.0]  # whole words only
    assert ExactMatch().score(FakeLM(), items)[:, 0].tolist() == [0.0, 0.0]
