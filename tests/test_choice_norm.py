"""`choice` reports acc (summed log-likelihood) and acc_norm (per character, lm-eval's definition) side by side."""

from types import SimpleNamespace

import numpy as np
import pytest

from lifelong.eval.scorers import SCORERS


class FixedLM:
    """An LM stub whose option log-likelihoods are given by hand."""

    def __init__(self, lls: list[list[float]]) -> None:
        self.lls = lls
        self.fm = SimpleNamespace(
            response_ids=lambda text, eos=False: list(range(len(text))), prompt_ids=lambda text: [0]
        )

    def choice_loglikelihoods(self, reqs: list) -> list[list[float]]:
        assert len(reqs) == len(self.lls)
        return self.lls


# option "entertainment" (13 chars): LL -6.5 = -0.5/char; option "tech" (4 chars): LL -4.0 = -1.0/char.
# Summed LL picks "tech" (-4.0 > -6.5); per character picks "entertainment" (-0.5 > -1.0).
ITEMS = [{"prompt": "p", "options": ["entertainment", "tech"], "answer": 0}]
LLS = [[-6.5, -4.0]]


@pytest.mark.parametrize(("norm", "col0", "col1"), [("none", 0.0, 1.0), ("char", 1.0, 0.0)])
def test_acc_and_acc_norm_disagree_on_a_hand_computed_item(norm, col0, col1):
    s = SCORERS.get("choice")(SCORERS.get("choice").Params(length_norm=norm))
    stats, records = s.score_details(FixedLM(LLS), ITEMS)
    assert stats.tolist() == [[col0, col1]]  # column 0: the matrix's accuracy, column 1: the other one
    assert records is not None
    r = records[0]
    assert (r["acc"], r["acc_norm"]) == (0.0, 1.0)
    assert r["prediction"] == ("tech" if norm == "none" else "entertainment")
    assert r["prediction_acc_norm"] == "entertainment"
    assert float(s.aggregate(stats)) == 100.0 * col0


def test_acc_norm_agrees_when_options_have_equal_length():
    items = [
        {"prompt": "p", "options": ["aa", "bb"], "answer": 1},
        {"prompt": "q", "options": ["aa", "bb"], "answer": 0},
    ]
    stats, _ = SCORERS.get("choice")().score_details(FixedLM([[-3.0, -1.0], [-3.0, -1.0]]), items)
    assert np.array_equal(stats[:, 0], stats[:, 1]) and stats[:, 0].tolist() == [1.0, 0.0]
