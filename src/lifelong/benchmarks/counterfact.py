"""CounterFact (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", ROME): counterfactual edits
of Wikidata facts ("The mother tongue of Danielle Darrieux is French" -> "English"), each with paraphrase prompts
(the same fact asked another way, behind a random prefix) and neighbourhood prompts (other subjects of the same
relation and old object, which must keep it); the release's `counterfact.json` (MEMIT's `multi_counterfact.json`
has the same layout: `file: multi_counterfact.json`).

Record layout (ROME's `dsets/counterfact.py` reads it as is):

    {"case_id": 0, "pararel_idx": 2796,
     "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                           "target_new": {"str": "English", "id": "Q1860"},
                           "target_true": {"str": "French", "id": "Q150"}, "subject": "Danielle Darrieux"},
     "paraphrase_prompts": [...], "neighborhood_prompts": [...], "attribute_prompts": [...],
     "generation_prompts": [...]}

As a request: prompt, subject, target_new / target_true (`str`), paraphrases, neighbourhood prompts (answer:
target_true), generation prompts, id = case_id. `attribute_prompts` (other subjects that have the new object) are
not scored by the matrix.

Metrics, as ROME's `experiments/summarize.py` computes them (the `edit` scorer, variant `cf_prob`; each P the
exponential of the mean log-probability per target token): efficacy score (ES) P(new) > P(old) on the edit
prompt, paraphrase score (PS) the same on the paraphrases, neighbourhood score (NS) P(old) > P(new) on the
neighbourhood prompts; per request the mean over its prompts, then the mean over requests. The magnitudes (EM, PM,
NM: P(new) - P(old), NM P(old) - P(new), in percentage points) are kept beside each as `magnitude[cf_prob]`.
"""

from __future__ import annotations

from typing import Any, Optional

from lifelong.benchmarks import BENCHMARKS
from lifelong.benchmarks._edit_sets import EditSetBenchmark, field
from lifelong.benchmarks.base import BenchmarkError

HINT = (
    "ROME's counterfact.json layout: case_id, requested_rewrite {prompt, subject, target_new {str}, target_true {str}}"
)


@BENCHMARKS.register("counterfact")
class CounterFact(EditSetBenchmark):
    """CounterFact edit requests (ROME): efficacy, paraphrase and neighbourhood score (cf_prob), magnitudes beside."""

    name = "counterfact"
    file_name = "counterfact.json"
    variant = "cf_prob"
    columns = ("efficacy_score", "paraphrase_score", "neighborhood_score")
    record_hint = HINT

    def convert(self, record: Any, index: int, where: str, params: Any) -> Optional[dict]:
        rw = ("requested_rewrite",)
        row: dict[str, Any] = {
            "prompt": field(record, rw + ("prompt",), str, where, HINT),
            "subject": field(record, rw + ("subject",), str, where, HINT),
            "target_new": field(record, rw + ("target_new", "str"), str, where, HINT),
            "target_true": field(record, rw + ("target_true", "str"), str, where, HINT),
        }
        if row["prompt"].count("{}") != 1:
            raise BenchmarkError(
                "path", f"{where}: requested_rewrite.prompt {row['prompt']!r} must hold one {{}} for the subject"
            )
        named = (("paraphrase_prompts", "paraphrases"), ("neighborhood_prompts", "neighborhood"))
        for key, ours in named + (("generation_prompts", "generation"),):
            if key in record:
                row[ours] = field(record, (key,), list, where, HINT)
        row["id"] = str(record.get("case_id", index))
        return row
