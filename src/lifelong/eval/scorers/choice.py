"""Multiple choice by log-likelihood: the option with the highest (optionally length-normalised)
log-likelihood given the prompt is the prediction; accuracy in percent."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


class ChoiceParams(Strict):
    length_norm: Literal["none", "token", "char"] = "none"
    """Divide each option's log-likelihood by its length in tokens or characters (lm-eval's acc_norm
    uses characters)."""


@SCORERS.register("choice")
class Choice(Scorer):
    Params = ChoiceParams
    metric = "accuracy"
    formats = ("classification", "choice")

    def score(self, lm: Any, items: list[dict]) -> np.ndarray:
        norm = self.params.length_norm  # type: ignore[attr-defined]
        out = np.zeros((len(items), 1))
        for n, it in enumerate(items):
            ctx = lm.fm.prompt_ids(it["prompt"])
            conts = [lm.fm.response_ids(o, eos=False) for o in it["options"]]
            lls = np.array(lm.choice_loglikelihood(ctx, conts))
            if norm == "token":
                lls = lls / np.array([len(c) for c in conts])
            elif norm == "char":
                lls = lls / np.array([max(len(o), 1) for o in it["options"]])
            out[n, 0] = float(int(np.argmax(lls)) == it["answer"])
        return out
