"""Multiple choice by log-likelihood: the option with the highest (optionally length-normalised)
log-likelihood given the prompt is the prediction; accuracy in percent (Brown et al. 2020, Language Models are
Few-Shot Learners, sec. 2.4: options ranked by likelihood, optionally per token or character). The options of
all items are scored in batches (`HFLM.choice_loglikelihoods`: each prompt run once, its options from its KV
cache).

Per-example statistics carry two columns side by side: column 0 is the accuracy the matrix uses (as chosen by
`length_norm`), column 1 the other one: acc_norm (per character, lm-eval's definition: the option's summed
log-likelihood divided by its length in characters) when `length_norm` is `none`, else plain acc. Each item's
record carries `acc`, `acc_norm` and the predictions of both."""

from __future__ import annotations

from typing import Any, Literal, Optional

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

    def also_reported(self) -> tuple[str, ...]:
        """Column 1: acc_norm per character when the matrix shows plain acc, else plain acc."""
        return ("acc_norm",) if self.params.length_norm == "none" else ("acc",)  # type: ignore[attr-defined]

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        norm = self.params.length_norm  # type: ignore[attr-defined]
        conts = [[lm.fm.response_ids(o, eos=False) for o in it["options"]] for it in items]
        reqs = [(lm.fm.prompt_ids(it["prompt"]), c) for it, c in zip(items, conts)]
        out = np.zeros((len(items), 2))
        records = []
        for n, (it, cs, lls) in enumerate(zip(items, conts, lm.choice_loglikelihoods(reqs))):
            scores = np.array(lls)
            if norm == "token":
                scores = scores / np.array([len(c) for c in cs])
            elif norm == "char":
                scores = scores / np.array([max(len(o), 1) for o in it["options"]])
            pred = int(np.argmax(scores))
            chars = np.array(lls) / np.array([max(len(o), 1) for o in it["options"]])
            pred_raw, pred_char = int(np.argmax(lls)), int(np.argmax(chars))
            acc, acc_norm = float(pred_raw == it["answer"]), float(pred_char == it["answer"])
            out[n, 0] = float(pred == it["answer"])
            out[n, 1] = acc_norm if norm == "none" else acc
            records.append(
                {
                    "index": n,
                    "score": out[n, 0],
                    "prediction": str(it["options"][pred]),
                    "gold": str(it["options"][it["answer"]]),
                    "predicted_index": pred,
                    "gold_index": int(it["answer"]),
                    "options": [str(o) for o in it["options"]],
                    "loglikelihoods": [float(x) for x in lls],
                    "scores": [float(x) for x in scores],  # what the prediction is the argmax of
                    "length_norm": norm,
                    "acc": acc,  # argmax of the summed log-likelihoods
                    "acc_norm": acc_norm,  # argmax of log-likelihood per character (lm-eval's acc_norm)
                    "prediction_acc_norm": str(it["options"][pred_char]),
                }
            )
        return out, records
