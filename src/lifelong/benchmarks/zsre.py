"""zsRE as an editing benchmark (Levy et al. 2017 zero-shot relation extraction questions; the edit split of De Cao
et al. 2021 and Mitchell et al. 2022, MEND, as ROME and MEMIT evaluate it): the release's `zsre_mend_eval.json`.

Record layout (MEND's evaluation file; ROME's `dsets/zsre.py` reads it):

    {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?",
     "pred": "Trinity College", "rephrase": "What university did Watts Humphrey take part in?",
     "alt": "University of Michigan", "answers": ["Illinois Institute of Technology"],
     "loc": "nq question: who played desmond doss father in hacksaw ridge", "loc_ans": "Hugo Weaving",
     "cond": "Trinity College >> University of Michigan || What university did Watts Humphrey attend?"}

As a request, as ROME and MEMIT build it: the prompt is `src` with the subject replaced by `{}` (a record whose
question does not hold its subject verbatim is matched ignoring case, else left out and counted), the new target
is `answers[0]` (ROME / MEMIT; `target: alt` takes MEND's and EasyEdit's alternative answer instead), the
paraphrase is `rephrase`, and the neighbourhood prompt is `loc + "?"` with answer `loc_ans` (ROME appends "?" to
the NQ question).

Metrics, as ROME's `eval_utils_zsre.py` and `summarize.py` compute them (the `edit` scorer, variant `top1`: the
share of target tokens that are the model's argmax under teacher forcing): edit accuracy (efficacy) on `src`,
generalization on `rephrase`, locality: the accuracy of `loc_ans` after `loc?` (ROME's "specificity"; EasyEdit
instead compares with the unedited model's own tokens, which a matrix row has no run of).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks._edit_sets import EditSetBenchmark, EditSetParams, field

HINT = "MEND's zsre_mend_eval.json layout: subject, src, answers, alt, rephrase, loc, loc_ans"


class ZsREParams(EditSetParams):
    target: Literal["answers", "alt"] = "answers"
    """The new target: `answers[0]` (ROME and MEMIT's zsRE: the true answer inserted) or `alt` (MEND's and
    EasyEdit's alternative answer)."""


@BENCHMARKS.register("zsre")
class ZsRE(EditSetBenchmark):
    """zsRE edit questions (MEND's eval split, as ROME / MEMIT use it): edit accuracy, generalization, locality."""

    Params = ZsREParams
    name = "zsre"
    file_name = "zsre_mend_eval.json"
    variant = "top1"
    columns = ("edit_accuracy", "generalization", "locality")
    record_hint = HINT
    skip_reason = "the question does not name its subject (no position to edit at) or there is no answer"

    def convert(self, record: Any, index: int, where: str, params: Any) -> Optional[dict]:
        subject = field(record, ("subject",), str, where, HINT)
        src = field(record, ("src",), str, where, HINT)
        if params.target == "alt":
            new = field(record, ("alt",), str, where, HINT)
        else:
            new = field(record, ("answers",), list, where, HINT)
            if not new or not new[0].strip():
                return None  # no answer to insert
            new = new[0]
        if subject in src:
            prompt = src.replace(subject, "{}", 1)
        else:
            m = re.search(re.escape(subject), src, flags=re.IGNORECASE)
            if m is None:
                return None  # the question does not name its subject: no subject position to edit at
            subject, prompt = m.group(0), src[: m.start()] + "{}" + src[m.end() :]
        loc = field(record, ("loc",), str, where, HINT)
        return {
            "prompt": prompt,
            "subject": subject,
            "target_new": new,
            "paraphrases": [field(record, ("rephrase",), str, where, HINT)],
            "neighborhood": [{"prompt": loc + "?", "target": field(record, ("loc_ans",), str, where, HINT)}],
            "id": str(index),
        }
