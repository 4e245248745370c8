"""An lm-evaluation-harness task as a probe of the results matrix (Gao et al., A framework for few-shot language
model evaluation, EleutherAI, v0.4): the task's own prompts, few-shot examples, filters and metrics, run by
lm-eval's evaluator on the in-memory model, one statistics row per document (lm-eval's `log_samples`), so the
matrix cell is lm-eval's number for those documents and the bootstrap resamples documents.

Items are the probe's placeholders (`{task, doc_id, prompt}`, `lifelong.eval.harness.probe_items`); the lm-eval
task objects are attached when the probe is built (`attach`). Column 0 is the primary metric (`metric`, default
the task's first per-document mean, e.g. `acc`); the task's other per-document means follow (`also_reported`,
e.g. `acc_norm`). The signature recorded in results.json names the lm-eval version, every task's version, the
few-shot count and seed and the metric. Needs `pip install lm-eval`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from typing import Any, Optional

import numpy as np
from pydantic import BaseModel, Field

from lifelong.config import Strict
from lifelong.eval.scorers import SCORERS
from lifelong.eval.scorers.base import Scorer


class LMEvalParams(Strict):
    metric: Optional[str] = None
    """The lm-eval metric of the matrix column, as lm-eval names it (`acc_norm`; after a named filter
    `exact_match,flexible-extract`); default: the task's first metric averaged over documents. The task's other
    such metrics are kept beside it."""
    fewshot_seed: int = Field(default=1234, ge=0, le=2**32 - 1)
    """Seed of the few-shot example draw (lm-eval's `--fewshot_seed`, default 1234)."""


@SCORERS.register("lm_eval")
class LMEval(Scorer):
    Params = LMEvalParams
    metric = "acc"
    formats = ("lm_eval",)

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        self.tasks: dict[str, Any] = {}
        self.keys: list[str] = []
        self.info: dict[str, Any] = {}

    def attach(self, tasks: dict[str, Any], keys: list[str], info: dict[str, Any]) -> None:
        """The probe's lm-eval task objects (name -> Task), its metrics ([primary, others...]) and what the
        signature records (`name`, `num_fewshot`, `versions`, `lm_eval`)."""
        self.tasks, self.keys, self.info = tasks, keys, info
        self.metric = keys[0]  # type: ignore[misc]

    def also_reported(self) -> tuple[str, ...]:
        return tuple(self.keys[1:])

    def signature(self) -> Optional[str]:
        if not self.info:
            return None
        p: LMEvalParams = self.params  # type: ignore[assignment]
        versions = ",".join(f"{k}={v}" for k, v in self.info["versions"].items())
        return (
            f"lm_eval:{self.info['lm_eval']}|task:{self.info['name']}|versions:{versions}|"
            f"num_fewshot:{self.info['num_fewshot']}|fewshot_seed:{p.fewshot_seed}|metric:{self.keys[0]}"
        )

    def score_details(self, lm: Any, items: list[dict]) -> tuple[np.ndarray, Optional[list[dict]]]:
        if not self.tasks:
            raise ValueError("the lm_eval scorer scores probes built from `lm_eval:` (eval.probes), not data rows")
        if not items:
            return np.zeros((0, len(self.keys))), []
        from lm_eval.evaluator import evaluate

        from lifelong.eval.harness_lm import HarnessLM

        wanted: dict[str, list[int]] = {}
        for it in items:
            wanted.setdefault(it["task"], []).append(int(it["doc_id"]))
        samples = {t: sorted(set(ids)) for t, ids in wanted.items()}  # lm-eval maps doc ids back in sorted order
        quiet = logging.getLogger("lm_eval")
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # lm-eval's progress bars, per chunk of items
                out = evaluate(
                    lm=HarnessLM(lm),
                    task_dict={"tasks": {t: self.tasks[t] for t in samples}, "groups": {}, "group_map": {}},
                    samples=samples,
                    log_samples=True,
                    bootstrap_iters=0,
                )
        finally:
            quiet.setLevel(level)
        logged = (out or {}).get("samples", {})
        shown = self.keys[0].split(",", 1)[1] if "," in self.keys[0] else "none"  # the primary metric's filter
        found: dict[tuple[str, int], dict[str, Any]] = {}  # (task, doc id) -> {metric key: value, "_": its sample}
        for t, rows in logged.items():
            for s in rows:
                f = s.get("filter", "none")
                got = found.setdefault((t, int(s["doc_id"])), {"_": s})
                for m in s.get("metrics", []):
                    got[m if f == "none" else f"{m},{f}"] = s[m]
                if f == shown:
                    got["_"] = s
        stats = np.zeros((len(items), len(self.keys)))
        records = []
        for n, it in enumerate(items):
            doc = found.get((it["task"], int(it["doc_id"])))
            if doc is None or any(k not in doc for k in self.keys):
                raise ValueError(
                    f"lm-eval returned no {self.keys[0]} for document {it['doc_id']} of task {it['task']!r}"
                )
            stats[n] = [float(doc[k]) for k in self.keys]
            records.append(self._record(n, it, doc, stats[n]))
        return stats, records

    def _record(self, n: int, item: dict, got: dict[str, Any], row: np.ndarray) -> dict:
        """What the model answered and what was expected: a choice task's option texts, a generation's text."""
        s = got["_"]
        t = self.tasks[item["task"]]
        rec: dict[str, Any] = {"index": n, "score": float(row[0]), "task": item["task"], "doc_id": item["doc_id"]}
        rec.update({k: float(v) for k, v in zip(self.keys, row)})
        resps = s.get("filtered_resps", [])
        target = s.get("target")
        if t.get_config("output_type") == "multiple_choice":
            lls = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]
            choices = [str(c) for c in t.doc_to_choice(s["doc"])] if s.get("doc") is not None else []
            pick = int(np.argmax(lls)) if lls else -1
            rec["prediction"] = choices[pick] if 0 <= pick < len(choices) else pick
            gold = target if not isinstance(target, list) else target[0]
            rec["gold"] = choices[gold] if isinstance(gold, int) and 0 <= gold < len(choices) else _plain(gold)
            rec["loglikelihoods"] = lls
            rec["options"] = choices
        else:
            first = resps[0] if resps else ""
            rec["prediction"] = _plain(first[0] if isinstance(first, (list, tuple)) and first else first)
            rec["gold"] = _plain(target)
        args = s.get("arguments") or []
        if args and isinstance(args[0], (list, tuple)) and args[0] and isinstance(args[0][0], str):
            rec["context"] = args[0][0]  # the prompt lm-eval built (few-shot examples included)
        return rec


def _plain(v: Any) -> Any:
    """A JSON value (lm-eval's targets and responses may hold tuples or numpy numbers)."""
    return json.loads(json.dumps(v, default=str))
