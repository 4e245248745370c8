"""Temporal knowledge: cloze probes of facts stamped with the time their answer holds, labelled by how the fact
moved between two snapshots of a corpus (TemporalWiki, Jang et al. 2022, "TemporalWiki: A Lifelong Benchmark for
Training and Evaluating Ever-Evolving Language Models": a language model continually pre-trained on successive
Wikipedia snapshots or their diffs, probed after each on facts that `changed`, stayed `unchanged` or are `new`
since the previous snapshot; the probe groups come from Jang et al. 2022, "Towards Continual Knowledge Learning
of Language Models", CKL: InvariantLAMA, UpdatedLAMA, NewLAMA).

A probe row: `{"prompt": "The prime minister of the United Kingdom is", "answer": "Boris Johnson", "label":
"changed", "outdated": "Theresa May", "time": "2021"}`: `answer` is the object at the probe's `time` (a string,
or a list of accepted strings, the first the canonical one), `outdated` (changed facts only, optional) the object
it replaced, `label` one of changed / unchanged / new. The corpus itself is plain `text` rows (a `time` field
beside them selects a snapshot with `data.where`). `data.where: {label: changed}` on a probe file gives one
column of the results matrix per group. Scored by `temporal` (generation accuracy, and for a changed fact
whether the model prefers its current object over the outdated one by log-likelihood)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat

LABELS = ("changed", "unchanged", "new")


def _shown(v: Any) -> str:
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


def objects(v: Any) -> list[str]:
    """An `answer` / `outdated` field as its list of accepted strings (a number counts as its text)."""
    vs = v if isinstance(v, list) else [v]
    return [x if isinstance(x, str) else json.dumps(x) for x in vs]


def _check_objects(row: dict[str, Any], field: str, where: str) -> list[str]:
    v = row[field]
    vs = v if isinstance(v, list) else [v]
    ok = bool(vs) and all(
        isinstance(x, str) and x.strip() or isinstance(x, (int, float)) and not isinstance(x, bool) for x in vs
    )
    if not ok:
        raise ValueError(
            f"{where}: field {field!r} must be a non-empty string (or a list of accepted strings), got {_shown(v)}"
        )
    return objects(v)


@SCENARIOS.register("temporal")
class Temporal(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (("prompt", "answer", "label"),)
    scorer = "temporal"
    example = (
        '{"prompt": "The prime minister of the United Kingdom is", "answer": "Boris Johnson", '
        '"outdated": "Theresa May", "label": "changed", "time": "2021"}\n'
        "The prime minister of the United Kingdom is -> Boris Johnson (not the outdated Theresa May)"
    )
    protocol = (
        "TemporalWiki (Jang et al. 2022: snapshots and diffs, probes changed / unchanged); "
        "CKL (Jang et al. 2022: invariant / updated / new facts)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        p = row["prompt"]
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{where}: field 'prompt' must be a non-empty string (a cloze), got {_shown(p)}")
        answers = _check_objects(row, "answer", where)
        label = row["label"]
        if label not in LABELS:
            raise ValueError(
                f"{where}: field 'label' must be one of {', '.join(LABELS)} (how the fact moved since the previous "
                f"snapshot), got {_shown(label)}"
            )
        if row.get("outdated") is not None:
            if label != "changed":
                raise ValueError(
                    f"{where}: field 'outdated' is given for a {label} fact; only a changed fact has an outdated "
                    "object (set label: changed, or leave 'outdated' out)"
                )
            old = _check_objects(row, "outdated", where)
            same = sorted(set(answers) & set(old))
            if same:
                raise ValueError(
                    f"{where}: {_shown(same[0])} is both in 'answer' and in 'outdated'; a changed fact's current "
                    "and outdated objects differ"
                )
        t = row.get("time")
        if t is not None and not (isinstance(t, str) and t.strip() or isinstance(t, int) and not isinstance(t, bool)):
            raise ValueError(f"{where}: field 'time' must be a string like \"2021-06\" (or a year), got {_shown(t)}")

    def prompt(self, row: dict[str, Any]) -> str:
        return str(row["prompt"])

    def response(self, row: dict[str, Any]) -> str:
        return objects(row["answer"])[0]

    def targets(self, row: dict[str, Any]) -> list[str]:
        return objects(row["answer"])

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "outdated": objects(row["outdated"]) if row.get("outdated") is not None else [],
            "label": row["label"],
        }
        if row.get("time") is not None:
            out["time"] = str(row["time"])
        return out
