"""BIG-bench's generative string metrics (Srivastava et al. 2022, "Beyond the Imitation Game", `bigbench/api`):
the greedy generation post-processed as BIG-bench's models do (`model_utils.postprocess_output`: cut after the
first `stop_string`, then the first match of `output_regex`, by default `[^\\.\\?\\!\\;\\n]+`, when the task sets
neither), then compared with the targets as `task_metrics` does: `exact_str_match` (the response is one of the
targets), `case_insensitive_str_match` (both stripped and lower-cased), `numeric_match_with_0_1_relative_error`
(the response as a number within 10% of the single target). Accuracy in percent; the metric the task prefers is
the matrix column and the other two are kept beside it.

`answer_prefix` is whitespace that ends the task's output prefix in BIG-bench's prompt ("\\nA: ") and that the
`bigbench` benchmark moves from the prompt to the start of the answer (so training tokenizes " 42" as a word, as
lm-eval does); the generation after the shortened prompt starts with it, and it is removed before the
post-processing, so the text compared is the text BIG-bench compares."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

import numpy as np
from pydantic import BaseModel, Field, field_validator

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer

DEFAULT_REGEX = r"[^\.\?\!\;\n]+"
"""BIG-bench's output regex when a task sets neither `output_regex` nor `stop_string` (`json_task._DEFAULT_REGEX`)."""

METRICS = ("exact_str_match", "case_insensitive_str_match", "numeric_match_with_0_1_relative_error")


class BigBenchMatchParams(Strict):
    metric: Literal["exact_str_match", "case_insensitive_str_match", "numeric_match_with_0_1_relative_error"] = (
        "exact_str_match"
    )
    """The BIG-bench metric of the matrix column (the task's `preferred_score`)."""
    stop_string: Optional[str] = None
    """The task's `stop_string`: the response ends after its first occurrence (not at position 0)."""
    output_regex: Optional[str] = None
    """The task's `output_regex`: the response is its first match ("" when none). With neither this nor
    `stop_string`, BIG-bench's default `[^\\.\\?\\!\\;\\n]+`."""
    answer_prefix: str = ""
    """Whitespace moved from the end of the prompt to the start of the answer; removed from the start of the
    generation and of the targets before comparing."""
    max_new_tokens: int = Field(default=32, ge=1, le=65536)
    """Generation budget per example."""

    @field_validator("output_regex")
    @classmethod
    def _regex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"{v!r} is not a Python regular expression ({e})") from None
        return v


def postprocess(text: str, stop_string: Optional[str], output_regex: Optional[str]) -> str:
    """BIG-bench's post-processing of a generation (`model_utils.postprocess_output`, without its length cap)."""
    if stop_string:
        k = text.find(stop_string)
        if k > 0:
            text = text[: k + len(stop_string)]
    if output_regex:
        text = next(iter(re.findall(output_regex, text)), "")
    return text


def numeric_match(response: str, targets: list[str], rel_error: float = 0.1) -> bool:
    """BIG-bench's `check_if_numeric_value_is_within_relative_error` (one target; absolute error for 0)."""
    try:
        target, value = float(targets[0]), float(response)
    except (ValueError, IndexError):
        return False
    return abs(value - target) / (target if target != 0 else 1) <= rel_error


@SCORERS.register("bigbench_match")
class BigBenchMatch(Scorer):
    Params = BigBenchMatchParams
    metric = "exact_str_match"
    formats = ("prompt_response",)

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        p: BigBenchMatchParams = self.params  # type: ignore[assignment]
        self.metric = p.metric  # type: ignore[misc]
        self.order = [p.metric] + [m for m in METRICS if m != p.metric]

    def also_reported(self) -> tuple[str, ...]:
        return tuple(self.order[1:])

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        p: BigBenchMatchParams = self.params  # type: ignore[assignment]
        regex = p.output_regex if (p.output_regex is not None or p.stop_string is not None) else DEFAULT_REGEX
        gens = lm.generate([lm.fm.prompt_ids(it["prompt"]) for it in items], max_new_tokens=p.max_new_tokens)
        out = np.zeros((len(items), len(METRICS)))
        records = []
        for n, (raw, it) in enumerate(zip(gens, items)):
            text = raw[len(p.answer_prefix) :] if p.answer_prefix and raw.startswith(p.answer_prefix) else raw
            response = postprocess(text, p.stop_string, regex)
            targets = [t[len(p.answer_prefix) :] if t.startswith(p.answer_prefix) else t for t in it["targets"]]
            got = {
                "exact_str_match": response in targets,
                "case_insensitive_str_match": response.strip().lower() in [t.strip().lower() for t in targets],
                "numeric_match_with_0_1_relative_error": numeric_match(response, targets),
            }
            out[n] = [float(got[m]) for m in self.order]
            records.append(
                {
                    "index": n,
                    "score": out[n, 0],
                    "prediction": response,
                    "gold": targets,
                    "generation": raw,
                    **{m: float(v) for m, v in got.items()},
                }
            )
        return out, records
